// A charging station that is not built on the Python `ocpp` package: plain `ws`
// plus `ajv`, validating every message it sends and receives against the OCPP 2.1
// JSON schemas (draft-06, formats checked). Usage:
//   node station.js <csms url ending in /> <station id> <schemas dir> <vehicle id>
// It boots, starts a transaction (SoC, power, energy registers), sends its charging
// needs (V2X parameters), waits for a SetChargingProfile, follows it, meters the
// discharge, checks a CALLERROR for a malformed frame, ends the transaction and
// prints a JSON summary on stdout. Exit code 0 only when no message broke a schema.
"use strict";
const fs = require("fs");
const path = require("path");
const WebSocket = require("ws");
const Ajv = require("ajv");
const addFormats = require("ajv-formats");

const [url, stationId, schemasDir, vehicleId] = process.argv.slice(2);
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addMetaSchema(require("ajv/dist/refs/json-schema-draft-06.json"));
addFormats(ajv);
const validators = {};
const violations = [];
const received = [];

function validate(name, payload) {
  if (!validators[name]) {
    const schema = JSON.parse(fs.readFileSync(path.join(schemasDir, `${name}.json`), "utf8").replace(/^\uFEFF/, ""));
    delete schema.$id;
    validators[name] = ajv.compile(schema);
  }
  if (!validators[name](payload)) violations.push({ name, errors: validators[name].errors });
}

const now = () => new Date().toISOString();
let seq = 0, nextId = 1, importWh = 1000, exportWh = 0, powerW = 0, soc = 55.0;
const pending = new Map();
let profileResolve;
const profileReceived = new Promise((resolve) => (profileResolve = resolve));
let setpointW = null;
let lastError = null;

const ws = new WebSocket(url + stationId, ["ocpp2.1"]);

function send(frame) { ws.send(typeof frame === "string" ? frame : JSON.stringify(frame)); }

function call(action, payload) {
  validate(`${action}Request`, payload);
  const id = `n${nextId++}`;
  return new Promise((resolve, reject) => {
    pending.set(id, { action, resolve, reject });
    send([2, id, action, payload]);
  });
}

function meter() {
  return [{ timestamp: now(), sampledValue: [
    { value: importWh, measurand: "Energy.Active.Import.Register", unitOfMeasure: { unit: "Wh" } },
    { value: exportWh, measurand: "Energy.Active.Export.Register", unitOfMeasure: { unit: "Wh" } },
    { value: Math.max(0, powerW), measurand: "Power.Active.Import", unitOfMeasure: { unit: "W" } },
    { value: Math.max(0, -powerW), measurand: "Power.Active.Export", unitOfMeasure: { unit: "W" } },
    { value: soc, measurand: "SoC", unitOfMeasure: { unit: "Percent" } },
  ] }];
}

function txEvent(eventType, triggerReason, withId) {
  const payload = { eventType, timestamp: now(), triggerReason, seqNo: seq++,
    transactionInfo: { transactionId: `${stationId}-tx1` }, evse: { id: 1, connectorId: 1 }, meterValue: meter() };
  if (eventType === "Ended") payload.transactionInfo.stoppedReason = "EVDisconnected";
  if (withId) payload.idToken = { idToken: vehicleId, type: "Local" };
  return call("TransactionEvent", payload);
}

ws.on("message", (data) => {
  const text = data.toString();
  let msg;
  try { msg = JSON.parse(text); } catch (e) { violations.push({ name: "json", errors: text }); return; }
  if (msg[0] === 3 || msg[0] === 4) {
    const p = pending.get(msg[1]);
    if (!p) { if (msg[0] === 4) lastError = msg; return; }
    pending.delete(msg[1]);
    if (msg[0] === 3) { validate(`${p.action}Response`, msg[2]); p.resolve(msg[2]); } else p.reject(msg);
    return;
  }
  const [, id, action, payload] = msg;
  received.push(action);
  validate(`${action}Request`, payload);
  let answer;
  if (action === "SetChargingProfile") {
    const period = payload.chargingProfile.chargingSchedule[0].chargingSchedulePeriod[0];
    setpointW = period.operationMode === "CentralSetpoint" ? period.setpoint : period.limit;
    powerW = setpointW;
    answer = { status: "Accepted" };
    setImmediate(() => profileResolve());
  } else if (action === "ClearChargingProfile") {
    answer = { status: "Accepted" };
  } else if (action === "TriggerMessage") {
    answer = { status: "Accepted" };
    if (payload.requestedMessage === "TransactionEvent") setImmediate(() => txEvent("Updated", "Trigger", true));
  } else if (action === "GetTransactionStatus") {
    answer = { messagesInQueue: false, ongoingIndicator: true };
  } else {
    send([4, id, "NotImplemented", `${action} not implemented by this station`, {}]);
    return;
  }
  validate(`${action}Response`, answer);
  send([3, id, answer]);
});

async function main() {
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  const protocol = ws.protocol;
  const boot = await call("BootNotification", { chargingStation: { model: "node-peer", vendorName: "v2x-tests" },
    reason: "PowerUp" });
  await call("StatusNotification", { timestamp: now(), connectorStatus: "Occupied", evseId: 1, connectorId: 1 });
  await txEvent("Started", "CablePluggedIn", true);
  const departure = new Date(Date.now() + 4 * 3600 * 1000).toISOString();
  await call("NotifyEVChargingNeeds", { evseId: 1, timestamp: now(), chargingNeeds: {
    requestedEnergyTransfer: "DC_BPT", availableEnergyTransfer: ["DC", "DC_BPT"], departureTime: departure,
    dcChargingParameters: { evMaxCurrent: 200, evMaxVoltage: 500, evEnergyCapacity: 60000 },
    v2xChargingParameters: { evTargetEnergyRequest: 12000, evMinV2XEnergyRequest: -15000,
      maxChargePower: 11000, maxDischargePower: 11000 } } });
  console.error("ready");   // the test commands us now
  await Promise.race([profileReceived, new Promise((r) => setTimeout(r, 15000))]);
  exportWh += 150; powerW = setpointW === null ? 0 : setpointW; soc -= 0.25;
  await txEvent("Updated", "MeterValuePeriodic", false);
  send("{not json");
  await new Promise((r) => setTimeout(r, 300));
  const malformedAnswer = lastError;
  await txEvent("Ended", "EVCommunicationLost", false);
  ws.close();
  console.log(JSON.stringify({ protocol, boot: boot.status, setpointW, received, malformedAnswer,
    violations }));
  process.exit(violations.length === 0 ? 0 : 1);
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err && err.message || err), violations,
  received })); process.exit(2); });
