"""The DR programmes this VEN is enrolled in (their OpenADR market contexts)."""
from aggregator.programmes.enrollment import Enrollment, EnrollmentRecord, PrimaryProgramme

__all__ = ["Enrollment", "EnrollmentRecord", "PrimaryProgramme"]
