// Interop tests of the rest of the GWS voice surface (contract: docs/voice-api.md): DTMF, mute,
// disposition, agent state and do-not-disturb on /v2/me/devices, transfers and conferences, and
// the test-control API, with the official CometD JavaScript client on both transports. Each
// test checks that every user involved gets exactly the tabled notifications, in order, and
// that the others get nothing. Clients authenticate as in voice.test.mjs (see lib/voice.mjs).
//
// Run: BAYEUX_SERVER_BIN=target/debug/bayeux-server tests/interop/run.sh voice-surface.test.mjs

import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { TRANSPORTS } from "./lib/cometd-node.mjs";
import { startServer } from "./lib/server.mjs";
import { show, sleep, waitFor } from "./lib/util.mjs";
import { AGENTS, CALLS_CHANNEL, deviceOf, rest, restOk, voiceClient } from "./lib/voice.mjs";

const T = { timeout: 30000 };
const DEVICES_CHANNEL = "/v2/me/devices";
/** How long to keep listening for notifications that must not come. */
const QUIET_MS = 400;

let server;
let clients = [];

beforeEach(async () => {
    server = undefined;
    clients = [];
    // Test control on, and outbound far ends that never answer by themselves.
    server = await startServer({ args: ["--voice-test-control"] });
}, { timeout: 15000 });

afterEach(async () => {
    const list = clients;
    clients = [];
    await Promise.all(list.map((c) => c.disconnect(3000)));
    if (server) {
        await server.stop();
    }
}, { timeout: 15000 });

function serverLog() {
    return server ? `\n--- server output (tail) ---\n${server.output().slice(-3000)}` : "";
}

/** The agent `name`, handshaken on `transport` and subscribed to both channels. */
async function connectAgent(name, transport) {
    const agent = { ...AGENTS[name] };
    agent.deviceId = (await deviceOf(server.baseUrl, agent.user)).id;
    const c = voiceClient(server.baseUrl, transport, { user: agent.user });
    clients.push(c);
    const reply = await c.handshake();
    assert.equal(reply.successful, true, show(reply));
    await c.subscribe(CALLS_CHANNEL);
    await c.subscribe(DEVICES_CHANNEL);
    agent.client = c;
    return agent;
}

const calls = (agent) => agent.client.messages(CALLS_CHANNEL);
const devices = (agent) => agent.client.messages(DEVICES_CHANNEL);

/** `type call-state [participants]` of each call notification, with call ids named by `names`. */
function digest(agent, names = {}) {
    return calls(agent).map((m) => {
        const c = m.data.call;
        const parts = c.participants.map((p) => p.phoneNumber).join(",");
        return `${m.data.notificationType} ${names[c.id] ?? c.id}-${c.state} [${parts}]`;
    });
}

async function waitCalls(agent, count, what) {
    await waitFor(() => calls(agent).length >= count, {
        timeout: 5000,
        what: `${agent.user}: ${what} (call notification #${count})`,
        details: () => `${agent.user} got ${show(digest(agent))}\n${agent.client.diagnostics()}${serverLog()}`,
    });
}

function post(agent, path, body) {
    return restOk(server.baseUrl, "POST", path, { user: agent.user, body });
}

function operate(agent, callId, body) {
    return post(agent, `/api/v2/me/calls/${callId}`, typeof body === "string" ? { operationName: body } : body);
}

/** Forgets what each agent received so far. */
function clear(...agents) {
    for (const a of agents) {
        calls(a).length = 0;
        devices(a).length = 0;
    }
}

/** agent1 calls agent2 and agent2 answers; returns the call id, notifications cleared. */
async function connected(a, b) {
    await post(a, `/api/v2/me/devices/${a.deviceId}/calls`, { operationName: "Dial", destination: { phoneNumber: b.dn } });
    await waitCalls(b, 1, "Ringing");
    const id = calls(b)[0].data.call.id;
    await operate(b, id, "Answer");
    await waitCalls(a, 2, "Established");
    await waitCalls(b, 2, "Established");
    clear(a, b);
    return id;
}

for (const transport of TRANSPORTS) {
    const tag = transport === "websocket" ? "ws" : "lp";

    describe(`voice surface over ${transport}`, () => {
        test(`${tag}: SendDtmf, mute and disposition — DtmfSent and mute to the requester only`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const c = await connectAgent("agent3", transport);
            const id = await connected(a, b);

            await operate(a, id, { operationName: "SendDtmf", digits: "1234#" });
            await waitCalls(a, 1, "DtmfSent");
            await operate(a, id, "MuteCall");
            await waitCalls(a, 2, "muted");
            assert.equal(calls(a)[1].data.call.mute, "On");
            assert.ok(calls(a)[1].data.call.capabilities.includes("UnmuteCall"), show(calls(a)[1]));
            await operate(b, id, { operationName: "SetCallDisposition", disposition: "Sale" });
            await waitCalls(a, 3, "AttachedDataChanged");
            await waitCalls(b, 1, "AttachedDataChanged");
            // The old field name is refused as GWS would: a missing parameter.
            const bad = await rest(server.baseUrl, "POST", `/api/v2/me/calls/${id}`, {
                user: a.user, body: { operationName: "SendDtmf", dtmfDigits: "1" },
            });
            assert.equal(bad.status, 400, show(bad.body));
            assert.equal(bad.body.statusCode, 1, show(bad.body));
            await sleep(QUIET_MS);
            assert.deepEqual(calls(a).map((m) => m.data.notificationType),
                ["DtmfSent", "StatusChange", "AttachedDataChanged"]);
            assert.deepEqual(calls(b).map((m) => m.data.notificationType), ["AttachedDataChanged"]);
            assert.equal(calls(b)[0].data.call.userData.DispositionCode, "Sale");
            assert.equal(calls(b)[0].data.call.mute, "Off", "b's own leg is not muted");
            assert.equal(calls(c).length + devices(c).length, 0);
        });

        test(`${tag}: agent state and do-not-disturb — DeviceStateChangeMessage to that user only`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            await post(a, "/api/v2/me/channels/voice", { operationName: "NotReady", reasonCode: "Lunch" });
            await post(a, `/api/v2/me/devices/${a.deviceId}`, { operationName: "DoNotDisturbOn" });
            await post(a, "/api/v2/me/channels/voice", { operationName: "Ready", workmode: "AutoIn" });
            await waitFor(() => devices(a).length >= 3, { timeout: 5000, what: "three device notifications" });
            await sleep(QUIET_MS);
            const got = devices(a).map((m) => m.data);
            assert.equal(got.length, 3, show(got));
            for (const d of got) {
                assert.equal(d.messageType, "DeviceStateChangeMessage", show(d));
                assert.equal("notificationType" in d, false, show(d));
                assert.equal(d.devices.length, 1);
                assert.equal(d.devices[0].id, a.deviceId);
            }
            assert.deepEqual(got[0].devices[0].userState, { state: "NotReady", displayName: "Not Ready", reasonCode: "Lunch" });
            assert.equal(got[1].devices[0].doNotDisturb, "On");
            assert.deepEqual(got[2].devices[0].userState, { state: "Ready", displayName: "Ready", workMode: "AutoIn" });
            assert.equal(got[2].devices[0].doNotDisturb, "On");
            // REST shows the same device.
            const now = await deviceOf(server.baseUrl, a.user);
            assert.deepEqual(now, got[2].devices[0]);
            assert.equal(devices(b).length + calls(b).length + calls(a).length, 0, "nobody else hears of it");
        });

        test(`${tag}: InitiateTransfer, answer, CompleteTransfer — each party gets exactly its notifications`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const c = await connectAgent("agent3", transport);
            const C = await connected(a, b);
            await operate(a, C, { operationName: "InitiateTransfer", destination: { phoneNumber: c.dn } });
            await waitCalls(c, 1, "consultation Ringing");
            const K = calls(c)[0].data.call.id;
            await operate(c, K, "Answer");
            await waitCalls(a, 3, "consultation Established");
            await operate(a, C, "CompleteTransfer");
            await waitCalls(a, 5, "both Released");
            await waitCalls(b, 1, "ParticipantsUpdated");
            await waitCalls(c, 4, "moved onto C");
            await sleep(QUIET_MS);
            const names = { [C]: "C", [K]: "K" };
            assert.deepEqual(digest(a, names), [
                "StatusChange C-Held [15001]",
                "StatusChange K-Dialing [15002]",
                "StatusChange K-Established [15002]",
                "StatusChange C-Released [15001,15002]",
                "StatusChange K-Released [15002]",
            ]);
            assert.deepEqual(digest(b, names), ["ParticipantsUpdated C-Established [15002]"]);
            assert.deepEqual(digest(c, names), [
                "StatusChange K-Ringing [15000]",
                "StatusChange K-Established [15000]",
                "StatusChange K-Released [15000]",
                "ParticipantsUpdated C-Established [15001]",
            ]);
            assert.equal(calls(a)[1].data.call.callType, "Consult");
            assert.equal(calls(a)[1].data.call.parentCallPath, `/calls/${C}`);
        });

        test(`${tag}: SingleStepTransfer; InitiateConference, SwapCalls twice, CompleteConference`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const c = await connectAgent("agent3", transport);
            // agent1 hands its call with agent2 to agent3 in one step.
            const C1 = await connected(a, b);
            await operate(a, C1, { operationName: "SingleStepTransfer", destination: { phoneNumber: c.dn }, userData: { via: "sst" } });
            await waitCalls(c, 1, "Ringing");
            await operate(c, C1, "Answer");
            await waitCalls(c, 2, "Established");
            await waitCalls(a, 1, "Released");
            await waitCalls(b, 1, "ParticipantsUpdated");
            await sleep(QUIET_MS);
            let names = { [C1]: "C1" };
            assert.deepEqual(digest(a, names), ["StatusChange C1-Released [15001,15002]"]);
            assert.deepEqual(digest(b, names), ["ParticipantsUpdated C1-Established [15002]"]);
            assert.deepEqual(digest(c, names), ["StatusChange C1-Ringing [15001]", "StatusChange C1-Established [15001]"]);
            assert.equal(calls(b)[0].data.call.userData.via, "sst");
            await operate(c, C1, "Hangup");
            await waitCalls(b, 2, "Released");
            clear(a, b, c);

            // agent1 consults agent3, swaps back and forth, then makes a conference.
            const C = await connected(a, b);
            await operate(a, C, { operationName: "InitiateConference", destination: { phoneNumber: c.dn } });
            await waitCalls(c, 1, "consultation Ringing");
            const K = calls(c)[0].data.call.id;
            await operate(c, K, "Answer");
            await waitCalls(a, 3, "consultation Established");
            await operate(a, K, { operationName: "SwapCalls", otherCallUri: `/calls/${C}` });
            await waitCalls(a, 5, "swapped");
            await operate(a, C, "SwapCalls");
            await waitCalls(a, 7, "swapped back");
            await operate(a, C, { operationName: "CompleteConference", consultCallUri: `${server.baseUrl}/api/v2/me/calls/${K}` });
            await waitCalls(a, 10, "conference");
            await waitCalls(b, 1, "ParticipantsUpdated");
            await waitCalls(c, 4, "moved onto C");
            await sleep(QUIET_MS);
            names = { [C]: "C", [K]: "K" };
            assert.deepEqual(digest(a, names), [
                "StatusChange C-Held [15001]",
                "StatusChange K-Dialing [15002]",
                "StatusChange K-Established [15002]",
                "StatusChange K-Held [15002]",
                "StatusChange C-Established [15001]",
                "StatusChange C-Held [15001]",
                "StatusChange K-Established [15002]",
                "StatusChange K-Released [15002]",
                "StatusChange C-Established [15001,15002]",
                "ParticipantsUpdated C-Established [15001,15002]",
            ]);
            assert.deepEqual(digest(b, names), ["ParticipantsUpdated C-Established [15000,15002]"]);
            assert.deepEqual(digest(c, names), [
                "StatusChange K-Ringing [15000]",
                "StatusChange K-Established [15000]",
                "StatusChange K-Released [15000]",
                "ParticipantsUpdated C-Established [15000,15001]",
            ]);
        });

        test(`${tag}: SingleStepConference, RemoveParticipantFromConference by the owner`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const c = await connectAgent("agent3", transport);
            const C = await connected(a, b);
            await operate(a, C, { operationName: "SingleStepConference", destination: { phoneNumber: c.dn } });
            await waitCalls(c, 1, "Ringing");
            await operate(c, C, "Answer");
            await waitCalls(c, 2, "Established");
            await operate(a, C, { operationName: "RemoveParticipantFromConference", participant: c.dn });
            await waitCalls(c, 3, "Released");
            await waitCalls(a, 2, "ParticipantsUpdated after the removal");
            await waitCalls(b, 2, "ParticipantsUpdated after the removal");
            await sleep(QUIET_MS);
            const names = { [C]: "C" };
            assert.deepEqual(digest(a, names), [
                "ParticipantsUpdated C-Established [15001,15002]",
                "ParticipantsUpdated C-Established [15001]",
            ]);
            assert.ok(calls(a)[0].data.call.capabilities.includes("RemoveParticipantFromConference"));
            assert.deepEqual(digest(b, names), [
                "ParticipantsUpdated C-Established [15000,15002]",
                "ParticipantsUpdated C-Established [15000]",
            ]);
            assert.deepEqual(digest(c, names), [
                "StatusChange C-Ringing [15000,15001]",
                "StatusChange C-Established [15000,15001]",
                "StatusChange C-Released [15000,15001]",
            ]);
        });

        test(`${tag}: test control — an inbound call with userData, far-end release, reset`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const made = await post(a, "/api/v2/test/calls", { from: "5551234", to: b.dn, userData: { account: "42" } });
            assert.match(made.id, /^[A-Z0-9]{32}$/, show(made));
            await waitCalls(b, 1, "inbound Ringing");
            const ringing = calls(b)[0].data.call;
            assert.equal(ringing.id, made.id);
            assert.equal(ringing.callType, "Inbound");
            assert.equal(ringing.dnis, b.dn);
            assert.equal(ringing.userData.account, "42");
            await operate(b, made.id, "Answer");
            await waitCalls(b, 2, "Established");
            await post(a, `/api/v2/test/calls/${made.id}`, { operationName: "FarEndRelease" });
            await waitCalls(b, 3, "Released by the far end");
            // An outbound call of agent1, then a reset: released, and the device back to Ready.
            await post(a, "/api/v2/me/channels/voice", { operationName: "AuxWork" });
            await post(a, `/api/v2/me/devices/${a.deviceId}/calls`, { operationName: "Dial", destination: { phoneNumber: "5550100" } });
            await waitCalls(a, 1, "Dialing");
            await post(b, "/api/v2/test/reset", {});
            await waitCalls(a, 2, "Released by the reset");
            await waitFor(() => devices(a).length >= 2, { timeout: 5000, what: "device back to Ready" });
            await sleep(QUIET_MS);
            assert.deepEqual(digest(b).map((d) => d.replace(made.id, "X")), [
                "StatusChange X-Ringing [5551234]",
                "StatusChange X-Established [5551234]",
                "StatusChange X-Released [5551234]",
            ]);
            assert.deepEqual(calls(a).map((m) => m.data.call.state), ["Dialing", "Released"]);
            assert.equal(devices(a).at(-1).data.devices[0].userState.state, "Ready");
            assert.equal(devices(b).length, 0, "agent2's device did not change");
            const left = await restOk(server.baseUrl, "GET", "/api/v2/me/calls", { user: a.user });
            assert.deepEqual(left.calls, []);
        });
    });
}

describe("voice test control is off by default", () => {
    test("without --voice-test-control every /api/v2/test path is 404 statusCode 6", T, async () => {
        const plain = await startServer();
        try {
            for (const path of ["/api/v2/test/calls", "/api/v2/test/reset", "/api/v2/test/calls/X"]) {
                const r = await rest(plain.baseUrl, "POST", path, { user: "agent1", body: { from: "1", to: "15000" } });
                assert.equal(r.status, 404, `${path}: ${show(r.body)}`);
                assert.equal(r.body.statusCode, 6, show(r.body));
            }
        } finally {
            await plain.stop();
        }
    });
});
