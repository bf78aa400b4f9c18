"""The HTTP API (OpenAPI 3.1, bearer tokens with roles), the web console and the health probes."""
from aggregator.api.server import ApiServer, build_api, openapi_document

__all__ = ["ApiServer", "build_api", "openapi_document"]
