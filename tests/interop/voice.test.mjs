// Interop tests of the voice API emulation (GWS v2 calls and call recording, contract:
// docs/voice-api.md) with the official CometD JavaScript client (cometd 9.x +
// cometd-nodejs-client) on the authenticated notifications endpoint /api/v2/notifications, once
// per transport, and REST calls under /api/v2 with fetch.
//
// Authentication of the client (details in lib/voice.mjs):
// - long-polling: `requestHeaders: {Authorization: "Basic ..."}`; each client also gets its own
//   BAYEUX_BROWSER cookie through the transport's `context.cookieStore` (the adapter's jar is
//   shared per process, which would make the three agents tabs of one browser, served with
//   `multiple-clients` advice and a 2 s poll interval);
// - websocket: cometd's WebSocketTransport creates `new window.WebSocket(url)` without options and
//   cometd-nodejs-client installs the `ws` package's class unchanged (no headers, no cookies), but
//   `ws` sends URL user info as `Authorization: Basic` on the upgrade, so the client's URL is
//   `http://agent1:password@127.0.0.1:PORT/api/v2/notifications`. Nothing of the official client
//   is modified. The cookie-only test installs, for its duration only, a `ws` subclass that adds a
//   `Cookie` header as `window.WebSocket` (what a browser does by itself).
//
// Run: BAYEUX_SERVER_BIN=target/debug/bayeux-server tests/interop/run.sh voice.test.mjs

import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { TRANSPORTS } from "./lib/cometd-node.mjs";
import { startServer } from "./lib/server.mjs";
import { show, sleep, waitFor, withTimeout } from "./lib/util.mjs";
import {
    AGENTS, CALLS_CHANNEL, assertCallMessage, basic, cookieWebSocketClass, deviceOf, notificationsUrl,
    rawBayeux, rest, restOk, sessionCookie, voiceClient, wsUpgradeStatus,
} from "./lib/voice.mjs";

const T = { timeout: 30000 };
/** How long to keep listening for notifications that must not come. */
const QUIET_MS = 500;
const FOREIGN_ORIGIN = "http://evil.example";

// Every test gets its own server process (started before it, killed by PID after it).
let server;
let clients = [];

beforeEach(async () => {
    server = undefined;
    clients = [];
    server = await startServer();
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
    return server ? `\n--- server output (tail) ---\n${server.output().slice(-4000)}` : "";
}

/** Raw WebSocket exchange (credentials as URL user info): one frame out, the first frame back. */
function rawWebSocketExchange(url, messages) {
    return withTimeout(new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.on("open", () => ws.send(JSON.stringify(messages)));
        ws.on("message", (data) => {
            try {
                resolve(JSON.parse(data.toString()));
            } catch (x) {
                reject(x);
            } finally {
                ws.close();
            }
        });
        ws.on("error", reject);
        ws.on("close", (code) => reject(new Error(`websocket closed (${code}) before a reply`)));
    }), 5000, `websocket exchange with ${url}`);
}

/** A CometD client on the notifications endpoint, disconnected after the test. */
function client(transport, credentials, options) {
    const c = voiceClient(server.baseUrl, transport, credentials, options);
    clients.push(c);
    return c;
}

/** The agent `name` with its device id, handshaken and subscribed to /v2/me/calls. */
async function connectAgent(name, transport) {
    const agent = { ...AGENTS[name] };
    agent.deviceId = (await deviceOf(server.baseUrl, agent.user)).id;
    const c = client(transport, { user: agent.user });
    const reply = await c.handshake();
    assert.equal(reply.successful, true, show(reply));
    assert.equal(c.cometd.getTransport().type, transport);
    await c.subscribe(CALLS_CHANNEL);
    agent.client = c;
    return agent;
}

/** The /v2/me/calls messages handed to the agent's subscription callback. */
function notes(agent) {
    return agent.client.messages(CALLS_CHANNEL);
}

function summary(agent) {
    return notes(agent).map((m) => `${m.data?.notificationType}/${m.data?.call?.state}/${m.data?.call?.recordingState}`).join(", ");
}

/** Waits until the agent has received `count` call notifications in all. */
async function waitNotes(agent, count, what) {
    await waitFor(() => notes(agent).length >= count, {
        timeout: 5000,
        what: `${agent.user}: ${what} (notification #${count})`,
        details: () => `${agent.user} got [${summary(agent)}]\n${agent.client.diagnostics()}${serverLog()}`,
    });
}

/** A call operation that must be accepted. */
function operate(agent, callId, operationName) {
    return restOk(server.baseUrl, "POST", `/api/v2/me/calls/${callId}`, { user: agent.user, body: { operationName } });
}

function dial(agent, phoneNumber) {
    return restOk(server.baseUrl, "POST", `/api/v2/me/devices/${agent.deviceId}/calls`, {
        user: agent.user, body: { operationName: "Dial", destination: { phoneNumber } },
    });
}

/**
 * Asserts that the agent received exactly `expected` (in order) and nothing else at all: no
 * other non-meta message on the wire, and every wire delivery handed to the subscriber once.
 */
function assertExactly(agent, expected, common) {
    const got = notes(agent);
    assert.equal(got.length, expected.length,
        `${agent.user} expected ${expected.length} notifications, got [${summary(agent)}]${serverLog()}`);
    expected.forEach((e, i) => assertCallMessage(got[i], agent, server.baseUrl, { ...common, ...e }, `#${i + 1}`));
    const wire = agent.client.incoming.filter((m) => !m.channel.startsWith("/meta/") && "data" in m);
    assert.equal(wire.length, expected.length, `${agent.user}: non-meta messages on the wire: ${show(wire)}`);
}

for (const transport of TRANSPORTS) {
    const tag = transport === "websocket" ? "ws" : "lp";

    describe(`voice notifications over ${transport}`, () => {
        test(`${tag}: recording life cycle — A gets exactly its notifications, B only its own leg, C nothing`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const c = await connectAgent("agent3", transport);

            await dial(a, b.dn);
            await waitNotes(b, 1, "Ringing");
            await waitNotes(a, 1, "Dialing");
            const ringing = notes(b)[0].data.call;
            const callId = ringing.id;
            const connId = ringing.connId;

            await operate(b, callId, "Answer");
            await waitNotes(b, 2, "Established");
            await waitNotes(a, 2, "Established");

            const recordingSteps = [
                ["StartCallRecording", "Recording"],
                ["PauseCallRecording", "Paused"],
                ["ResumeCallRecording", "Recording"],
                ["StopCallRecording", "Stopped"],
            ];
            let n = 2;
            for (const [op, state] of recordingSteps) {
                await operate(a, callId, op);
                await waitNotes(a, ++n, `${op} -> ${state}`);
            }

            await operate(a, callId, "Hangup");
            await waitNotes(a, ++n, "Released");
            await waitNotes(b, 3, "Released");
            await sleep(QUIET_MS);

            const common = { id: callId, connId, dnis: b.dn, callType: "Internal" };
            assertExactly(a, [
                { notificationType: "StatusChange", state: "Dialing", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Established", recordingState: "Stopped" },
                { notificationType: "CallRecordingStateChange", state: "Established", recordingState: "Recording", gsipRecord: "ON" },
                { notificationType: "CallRecordingStateChange", state: "Established", recordingState: "Paused", gsipRecord: "PAUSED" },
                { notificationType: "CallRecordingStateChange", state: "Established", recordingState: "Recording", gsipRecord: "ON" },
                { notificationType: "CallRecordingStateChange", state: "Established", recordingState: "Stopped", gsipRecord: "OFF" },
                { notificationType: "StatusChange", state: "Released", recordingState: "Stopped", gsipRecord: "OFF" },
            ], { ...common, other: b.dn });
            // B's own leg only: its recording stays Stopped and it never sees A's GSIP_* keys.
            assertExactly(b, [
                { notificationType: "StatusChange", state: "Ringing", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Established", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Released", recordingState: "Stopped" },
            ], { ...common, other: a.dn });
            assertExactly(c, [], {});

            // deviceUri points at A's device.
            const deviceUri = notes(a)[0].data.call.deviceUri;
            const device = await restOk(server.baseUrl, "GET", new URL(deviceUri).pathname, { user: a.user });
            assert.equal(device.device?.id, a.deviceId, show(device));
            assert.equal(device.device?.phoneNumber, a.dn, show(device));

            // The released call left A's list; REST agrees with the last notification.
            const calls = await restOk(server.baseUrl, "GET", "/api/v2/me/calls", { user: a.user });
            assert.deepEqual(calls.calls, [], show(calls));
            const last = await restOk(server.baseUrl, "GET", `/api/v2/me/calls/${callId}`, { user: a.user });
            assert.equal(last.call.state, "Released", show(last));
            assert.equal(last.call.recordingState, "Stopped", show(last));
        });

        test(`${tag}: hangup while recording — one Released notification, recording stopped, for each party`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            await dial(a, b.dn);
            await waitNotes(b, 1, "Ringing");
            const callId = notes(b)[0].data.call.id;
            await operate(b, callId, "Answer");
            await waitNotes(a, 2, "Established");
            await operate(a, callId, "StartCallRecording");
            await waitNotes(a, 3, "Recording");
            await operate(a, callId, "PauseCallRecording");
            await waitNotes(a, 4, "Paused");
            // B hangs up: both legs are released; A's recording stops with it.
            await operate(b, callId, "Hangup");
            await waitNotes(a, 5, "Released");
            await waitNotes(b, 3, "Released");
            // Nothing is valid on a released call any more.
            const r = await rest(server.baseUrl, "POST", `/api/v2/me/calls/${callId}`, { user: a.user, body: { operationName: "StopCallRecording" } });
            assert.equal(r.status, 400, show(r.body));
            assert.equal(r.body.statusCode, 2, show(r.body));
            await sleep(QUIET_MS);
            const common = { id: callId, dnis: b.dn };
            assertExactly(a, [
                { notificationType: "StatusChange", state: "Dialing", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Established", recordingState: "Stopped" },
                { notificationType: "CallRecordingStateChange", state: "Established", recordingState: "Recording", gsipRecord: "ON" },
                { notificationType: "CallRecordingStateChange", state: "Established", recordingState: "Paused", gsipRecord: "PAUSED" },
                { notificationType: "StatusChange", state: "Released", recordingState: "Stopped", gsipRecord: "OFF" },
            ], { ...common, other: b.dn });
            assertExactly(b, [
                { notificationType: "StatusChange", state: "Ringing", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Established", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Released", recordingState: "Stopped" },
            ], { ...common, other: a.dn });
        });

        test(`${tag}: handshake without credentials or with a wrong password is refused (401::Access denied)`, T, async () => {
            for (const credentials of [null, { user: "agent1", password: "wrong" }, { user: "nobody", password: "password" }]) {
                const c = client(transport, credentials);
                await assert.rejects(c.handshake(5000), /handshake failed/, `credentials ${show(credentials)}`);
                const h = c.handshakes[0];
                assert.ok(h, `no handshake reply for ${show(credentials)}: ${c.diagnostics()}`);
                assert.equal(h.successful, false, show(h));
                assert.equal(h.error, "401::Access denied", show(h));
                assert.equal(h.clientId, undefined, `no session must be created: ${show(h)}`);
                assert.equal(h.advice?.reconnect, "none", show(h));
                await c.disconnect(1000);
            }
            // Control: the right password on the same transport is accepted.
            const ok = client(transport, { user: "agent1" });
            const reply = await ok.handshake();
            assert.equal(reply.successful, true);
        });

        test(`${tag}: a session cookie alone authenticates the handshake; a forged one does not`, T, async () => {
            const cookie = await sessionCookie(server.baseUrl, "agent1");
            const forged = "JSESSIONID=" + "0".repeat(64);
            const w = globalThis.window;
            const saved = w.WebSocket;
            const make = (value) => {
                if (transport === "websocket") {
                    w.WebSocket = cookieWebSocketClass({ Cookie: value });
                    return client(transport, null);
                }
                return client(transport, null, { cookie: value });
            };
            try {
                const bad = make(forged);
                await assert.rejects(bad.handshake(5000), /401::Access denied/);
                await bad.disconnect(1000);

                const c = make(cookie);
                await c.handshake();
                await c.subscribe(CALLS_CHANNEL);
                const agent = { ...AGENTS.agent1, deviceId: (await deviceOf(server.baseUrl, "agent1")).id, client: c };
                await dial(agent, AGENTS.agent2.dn);
                await waitNotes(agent, 1, "Dialing");
                assertCallMessage(notes(agent)[0], agent, server.baseUrl, {
                    notificationType: "StatusChange", state: "Dialing", recordingState: "Stopped",
                    other: AGENTS.agent2.dn, dnis: AGENTS.agent2.dn,
                });
            } finally {
                w.WebSocket = saved;
            }
        });

        test(`${tag}: clients cannot publish to /v2/me/calls (403::Publish denied) nor subscribe elsewhere under /v2`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const reply = await withTimeout(new Promise((resolve) => {
                a.client.cometd.publish(CALLS_CHANNEL, { messageType: "CallStateChangeMessage", forged: true }, resolve);
            }), 5000, "publish reply");
            assert.equal(reply.successful, false, show(reply));
            assert.equal(String(reply.error), "403::Publish denied", show(reply));

            const sub = await withTimeout(new Promise((resolve) => {
                a.client.cometd.subscribe("/v2/**", () => {}, resolve);
            }), 5000, "subscribe reply");
            assert.equal(sub.successful, false, show(sub));
            assert.match(String(sub.error), /^403:/, show(sub));

            await sleep(QUIET_MS);
            assertExactly(a, [], {});
            assertExactly(b, [], {});
        });

        test(`${tag}: A's clientId on requests authenticated as B (or as nobody) is an unknown session (402)`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const clientId = a.client.cometd.getClientId();
            const subscribe = (id) => [{ id, channel: "/meta/subscribe", clientId, subscription: "/v2/me/devices" }];
            // Over long-polling the requests also carry A's browser cookie, as if sent from A's
            // browser: only the authenticated user differs.
            const browser = a.client.browserId ? { Cookie: `BAYEUX_BROWSER=${a.client.browserId}` } : {};

            for (const [who, headers] of [["agent2", { ...browser, Authorization: basic("agent2") }], ["nobody", { ...browser }],
                ["agent1 with a wrong password", { ...browser, Authorization: basic("agent1", "wrong") }]]) {
                for (const [suffix, msgs] of [
                    ["", subscribe("s1")],
                    ["/connect", [{ id: "c1", channel: "/meta/connect", clientId, connectionType: "long-polling", advice: { timeout: 0 } }]],
                ]) {
                    const r = await rawBayeux(server.baseUrl, msgs, headers, suffix);
                    assert.equal(r.status, 200, `as ${who} ${msgs[0].channel}: HTTP ${r.status} ${show(r.body)}`);
                    const m = r.body.find((x) => x.channel === msgs[0].channel);
                    assert.ok(m, `as ${who}: ${show(r.body)}`);
                    assert.equal(m.successful, false, `as ${who}: ${show(m)}`);
                    assert.equal(m.error, "402::session_unknown", `as ${who}: ${show(m)}`);
                }
            }

            // The same over a WebSocket whose upgrade authenticated as B.
            const wsUrl = notificationsUrl(server.baseUrl, { user: "agent2" }).replace(/^http/, "ws");
            const wsReply = await rawWebSocketExchange(wsUrl, subscribe("s3"));
            const wsSub = wsReply.find((x) => x.channel === "/meta/subscribe");
            assert.equal(wsSub?.successful, false, `over a WebSocket as agent2: ${show(wsReply)}`);
            assert.equal(wsSub.error, "402::session_unknown", show(wsSub));

            // Control: the same request authenticated as A is accepted.
            const own = await rawBayeux(server.baseUrl, subscribe("s2"), { ...browser, Authorization: basic("agent1") });
            const ownReply = own.body.find?.((x) => x.channel === "/meta/subscribe");
            assert.equal(ownReply?.successful, true, `as agent1: ${show(own.body)}`);

            // The refused requests did not disturb A's session: it still gets its notifications.
            await dial(a, b.dn);
            await waitNotes(a, 1, "Dialing after the foreign requests");
            await waitNotes(b, 1, "Ringing");
            assert.equal(a.client.cometd.getClientId(), clientId);
            assert.equal(a.client.cometd.getStatus(), "connected");
        });

        test(`${tag}: A cannot operate on a B-C call (404 statusCode 6); agent3 has no recording`, T, async () => {
            const a = await connectAgent("agent1", transport);
            const b = await connectAgent("agent2", transport);
            const c = await connectAgent("agent3", transport);

            await dial(b, c.dn);
            await waitNotes(c, 1, "Ringing");
            await waitNotes(b, 1, "Dialing");
            const callId = notes(c)[0].data.call.id;

            for (const operationName of ["Hangup", "Answer", "StartCallRecording"]) {
                const r = await rest(server.baseUrl, "POST", `/api/v2/me/calls/${callId}`, { user: a.user, body: { operationName } });
                assert.equal(r.status, 404, `${operationName}: ${show(r.body)}`);
                assert.equal(r.body.statusCode, 6, show(r.body));
                assert.deepEqual(Object.keys(r.body).sort(), ["statusCode", "statusMessage"], show(r.body));
            }
            const g = await rest(server.baseUrl, "GET", `/api/v2/me/calls/${callId}`, { user: a.user });
            assert.equal(g.status, 404, show(g.body));
            assert.equal(g.body.statusCode, 6, show(g.body));

            await operate(c, callId, "Answer");
            await waitNotes(c, 2, "Established");
            await waitNotes(b, 2, "Established");
            // agent3 lacks api-voice-recording: the operation does not exist for it.
            const rec = await rest(server.baseUrl, "POST", `/api/v2/me/calls/${callId}`, { user: c.user, body: { operationName: "StartCallRecording" } });
            assert.equal(rec.status, 400, show(rec.body));
            assert.equal(rec.body.statusCode, 2, show(rec.body));
            await sleep(QUIET_MS);

            const common = { id: callId, dnis: c.dn, callType: "Internal" };
            assertExactly(a, [], {});
            assertExactly(b, [
                { notificationType: "StatusChange", state: "Dialing", recordingState: "Stopped" },
                { notificationType: "StatusChange", state: "Established", recordingState: "Stopped" },
            ], { ...common, other: c.dn });
            assertExactly(c, [
                { notificationType: "StatusChange", state: "Ringing" },
                { notificationType: "StatusChange", state: "Established" },
            ], { ...common, other: b.dn });
        });
    });
}

describe("voice origin checks", () => {
    test("REST with a foreign Origin: 403 statusCode 3; the server's own origin is allowed", T, async () => {
        for (const [method, path, body] of [
            ["GET", "/api/v2/me", undefined],
            ["GET", "/api/v2/me/devices", undefined],
            ["POST", "/api/v2/me/calls/0123456789ABCDEF0123456789ABCDEF", { operationName: "Hangup" }],
        ]) {
            const r = await rest(server.baseUrl, method, path, { user: "agent1", origin: FOREIGN_ORIGIN, body });
            assert.equal(r.status, 403, `${method} ${path}: ${show(r.body)}`);
            assert.deepEqual(r.body, { statusCode: 3, statusMessage: "Origin not allowed" });
            assert.equal(r.headers.get("access-control-allow-origin"), null, "no CORS headers for a refused origin");
            assert.equal(r.headers.get("set-cookie"), null, "no session cookie for a refused origin");
        }
        const own = await rest(server.baseUrl, "GET", "/api/v2/me", { user: "agent1", origin: server.baseUrl });
        assert.equal(own.status, 200, show(own.body));
        assert.equal(own.body.statusCode, 0);
        assert.equal(own.headers.get("access-control-allow-origin"), server.baseUrl);
    });

    test("notifications endpoint with a foreign Origin: upgrade refused, long-polling handshake refused", T, async () => {
        const wsUrl = notificationsUrl(server.baseUrl, { user: "agent1" }).replace(/^http/, "ws");
        assert.equal(await wsUpgradeStatus(wsUrl, { origin: server.baseUrl }), "open", "control: own origin");
        assert.equal(await wsUpgradeStatus(wsUrl, { origin: FOREIGN_ORIGIN }), 403);

        const handshake = [{ id: "1", channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: ["long-polling"] }];
        const r = await rawBayeux(server.baseUrl, handshake, { Authorization: basic("agent1"), Origin: FOREIGN_ORIGIN });
        assert.equal(r.status, 403, `foreign-origin handshake: HTTP ${r.status} ${show(r.body)}`);
        const okr = await rawBayeux(server.baseUrl, handshake, { Authorization: basic("agent1"), Origin: server.baseUrl });
        assert.equal(okr.status, 200, show(okr.body));
        assert.equal(okr.body[0]?.successful, true, show(okr.body));
    });
});
