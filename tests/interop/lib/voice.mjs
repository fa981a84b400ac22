// Helpers for the voice API interop tests (voice*.test.mjs): Basic credentials, REST calls under
// /api/v2, CometD clients on the authenticated notifications endpoint, and the shape of a GWS
// CallStateChangeMessage.
//
// How a Node CometD client authenticates on /api/v2/notifications:
// - long-polling: `requestHeaders: {Authorization: "Basic ..."}` (the XHR adapter of
//   cometd-nodejs-client sends them on every request) or `requestHeaders: {Cookie: ...}`;
// - websocket: cometd's WebSocketTransport calls `new window.WebSocket(url[, protocol])` with no
//   options, and cometd-nodejs-client's adapt() installs the `ws` package's WebSocket as is (no
//   headers, no cookies from the XHR jar). `ws` however turns URL user info into an
//   `Authorization: Basic` header on the upgrade request, so the client is configured with
//   `http://user:password@host:port/api/v2/notifications` (cometd rewrites http: to ws:). The
//   official client code and the adapter stay unmodified. A cookie-only upgrade needs a `ws`
//   subclass that adds the header (see `cookieWebSocketClass`).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { WebSocket } from "ws";
import { TestClient } from "./cometd-node.mjs";
import { show, withTimeout } from "./util.mjs";

export const NOTIFICATIONS_PATH = "/api/v2/notifications";
export const CALLS_CHANNEL = "/v2/me/calls";
export const PASSWORD = "password";

/** The embedded demo users (crates/bayeux-voice/src/config.rs). */
export const AGENTS = {
    agent1: { user: "agent1", dn: "15000", recording: true },
    agent2: { user: "agent2", dn: "15001", recording: true },
    agent3: { user: "agent3", dn: "15002", recording: false },
};

export function basic(user, password = PASSWORD) {
    return "Basic " + Buffer.from(`${user}:${password}`, "utf8").toString("base64");
}

/**
 * One REST request under the server's base URL. `auth`: `{user, password}` (Basic), a raw
 * header object, or null (none). Resolves with `{status, body, headers}`; `body` is the parsed
 * JSON (or the raw text when it is not JSON).
 */
export async function rest(baseUrl, method, path, { user, password = PASSWORD, body, origin, headers = {}, timeout = 5000 } = {}) {
    const h = { ...headers };
    if (user) {
        h.Authorization = basic(user, password);
    }
    if (origin) {
        h.Origin = origin;
    }
    if (body !== undefined) {
        h["Content-Type"] = "application/json";
    }
    const res = await withTimeout(fetch(baseUrl + path, {
        method,
        headers: h,
        body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
    }), timeout, `${method} ${path}`);
    const text = await res.text();
    let parsed = text;
    try {
        parsed = JSON.parse(text);
    } catch {
        // not JSON: keep the text
    }
    return { status: res.status, body: parsed, headers: res.headers };
}

/** REST request expected to be accepted (HTTP 200, statusCode 0): resolves with the body. */
export async function restOk(baseUrl, method, path, options) {
    const r = await rest(baseUrl, method, path, options);
    assert.equal(r.status, 200, `${method} ${path} as ${options?.user}: HTTP ${r.status} ${show(r.body)}`);
    assert.equal(r.body?.statusCode, 0, `${method} ${path} as ${options?.user}: ${show(r.body)}`);
    return r.body;
}

/** The user's only device (`GET /api/v2/me/devices`). */
export async function deviceOf(baseUrl, user) {
    const body = await restOk(baseUrl, "GET", "/api/v2/me/devices", { user });
    assert.ok(Array.isArray(body.devices) && body.devices.length === 1, `devices of ${user}: ${show(body)}`);
    return body.devices[0];
}

/** The value of the JSESSIONID cookie set by an authenticated REST request of `user`. */
export async function sessionCookie(baseUrl, user) {
    const r = await rest(baseUrl, "GET", "/api/v2/me", { user });
    assert.equal(r.status, 200, show(r.body));
    const set = r.headers.getSetCookie ? r.headers.getSetCookie() : [r.headers.get("set-cookie")];
    const cookie = set.filter(Boolean).map((c) => c.split(";")[0].trim()).find((c) => c.startsWith("JSESSIONID="));
    assert.ok(cookie, `no JSESSIONID cookie in ${show(set)}`);
    return cookie;
}

/** The notifications endpoint URL, with Basic credentials as URL user info when given. */
export function notificationsUrl(baseUrl, credentials) {
    const url = new URL(NOTIFICATIONS_PATH, baseUrl);
    if (credentials) {
        url.username = encodeURIComponent(credentials.user);
        url.password = encodeURIComponent(credentials.password ?? PASSWORD);
    }
    return url.href;
}

/**
 * A CometD client (official client, one transport) for the notifications endpoint,
 * authenticated with Basic credentials as described at the top of this file; `credentials`
 * null: no credentials; `cookie`: a `JSESSIONID=...` pair to send instead (long-polling only;
 * for websocket see `cookieWebSocketClass`).
 */
export function voiceClient(baseUrl, transport, credentials, { cookie } = {}) {
    const viaUrl = transport === "websocket" && credentials;
    const client = new TestClient(notificationsUrl(baseUrl, viaUrl ? credentials : null), transport);
    const requestHeaders = {};
    if (credentials && !viaUrl) {
        requestHeaders.Authorization = basic(credentials.user, credentials.password ?? PASSWORD);
    }
    if (cookie) {
        requestHeaders.Cookie = cookie;
    }
    client.cometd.configure({ requestHeaders });
    if (transport === "long-polling") {
        // cometd-nodejs-client keeps one cookie jar per process and host, so every client would
        // present the same BAYEUX_BROWSER cookie and the server would treat the agents as tabs of
        // one browser (extra long polls answered at once with `multiple-clients` advice and a 2 s
        // interval, delaying notifications). Each agent gets its own browser instead: the adapter
        // reads cookies from `context.cookieStore` of the transport (copied into every XHR) when
        // set; it is pre-filled with a browser id of this client's own.
        client.browserId = randomBytes(16).toString("hex");
        const host = new URL(baseUrl).hostname;
        client.cometd.findTransport("long-polling").context = {
            cookieStore: { [host]: { BAYEUX_BROWSER: `BAYEUX_BROWSER=${client.browserId}` } },
        };
    }
    return client;
}

/**
 * A `ws` WebSocket class that adds `headers` to every upgrade request, to install temporarily as
 * `window.WebSocket` (the WebSocketTransport looks it up at each connect).
 */
export function cookieWebSocketClass(headers) {
    return class extends WebSocket {
        constructor(url, protocols) {
            super(url, protocols, { headers });
        }
    };
}

/** Raw long-polling POST of Bayeux messages to the notifications endpoint with the given headers. */
export async function rawBayeux(baseUrl, messages, headers = {}, suffix = "") {
    const res = await withTimeout(fetch(baseUrl + NOTIFICATIONS_PATH + suffix, {
        method: "POST",
        headers: { "Content-Type": "application/json;charset=UTF-8", ...headers },
        body: JSON.stringify(messages),
    }), 5000, `POST ${NOTIFICATIONS_PATH}${suffix}`);
    const text = await res.text();
    let body = text;
    try {
        body = JSON.parse(text);
    } catch {
        // not JSON
    }
    return { status: res.status, body };
}

/**
 * Capabilities per the contract (docs/voice-api.md, "Capabilities: one rule" and "Recording") of a
 * two-party call in no consultation pair, unmuted, as sorted lists.
 */
const USER_DATA_OPS = ["AttachUserData", "UpdateUserData", "DeleteUserDataPair", "DeleteUserData", "SetCallDisposition"];
const ESTABLISHED_BASE = ["Hangup", "Hold", "SendDtmf", "MuteCall", "InitiateConference", "SingleStepTransfer", "InitiateTransfer",
    "SingleStepConference", ...USER_DATA_OPS];

export function expectedCapabilities(state, recordingState, recordingFeature = true) {
    let caps;
    switch (state) {
        case "Ringing": caps = ["Answer", "Hangup", ...USER_DATA_OPS]; break;
        case "Dialing": caps = ["Hangup", "SendDtmf", ...USER_DATA_OPS]; break;
        case "Established": caps = [...ESTABLISHED_BASE]; break;
        case "Held": caps = ["Hangup", "Retrieve", ...USER_DATA_OPS]; break;
        case "Released": caps = []; break;
        default: throw new Error(`unknown state ${state}`);
    }
    if (recordingFeature) {
        if (state === "Established") {
            caps.push(...({
                Stopped: ["StartCallRecording"],
                Recording: ["PauseCallRecording", "StopCallRecording"],
                Paused: ["ResumeCallRecording", "StopCallRecording"],
            })[recordingState]);
        } else if (state === "Held" && recordingState !== "Stopped") {
            caps.push("StopCallRecording");
        }
    }
    return caps.sort();
}

const ENVELOPE_KEYS = ["call", "messageType", "notificationType", "phoneNumber"];

/**
 * Asserts the GWS envelope and the call object of one `/v2/me/calls` message received by `agent`
 * (`{user, dn, recording, deviceId}`) on a server at `baseUrl`, and the `expected` fields:
 * `{notificationType, state, recordingState, gsipRecord, other, dnis, callType, id, connId}`
 * (`gsipRecord` undefined: no GSIP_RECORD key). Returns the call object.
 */
export function assertCallMessage(message, agent, baseUrl, expected, where = "") {
    const ctx = `${where} ${agent.user}: ${show(message)}`;
    assert.equal(message.channel, CALLS_CHANNEL, ctx);
    const data = message.data;
    assert.deepEqual(Object.keys(data).sort(), ENVELOPE_KEYS, `envelope keys, ${ctx}`);
    assert.equal(data.messageType, "CallStateChangeMessage", ctx);
    assert.equal(data.notificationType, expected.notificationType, `notificationType, ${ctx}`);
    assert.equal(data.phoneNumber, agent.dn, `phoneNumber, ${ctx}`);
    const call = data.call;
    assert.match(call.id, /^[A-Z0-9]{32}$/, `call.id, ${ctx}`);
    assert.equal(call.callUuid, call.id, ctx);
    assert.match(call.connId, /^[0-9a-fA-F]{16}$/, `connId, ${ctx}`);
    if (expected.id) {
        assert.equal(call.id, expected.id, `call.id, ${ctx}`);
    }
    if (expected.connId) {
        assert.equal(call.connId, expected.connId, `connId, ${ctx}`);
    }
    assert.equal(call.state, expected.state, `call.state, ${ctx}`);
    assert.equal(call.uri, `${baseUrl}/api/v2/me/calls/${call.id}`, `uri, ${ctx}`);
    assert.equal(call.path, `/calls/${call.id}`, `path, ${ctx}`);
    assert.equal(call.deviceUri, `${baseUrl}/api/v2/devices/${agent.deviceId}`, `deviceUri, ${ctx}`);
    assert.deepEqual(call.participants, [{
        e164Number: "", formattedPhoneNumber: expected.other, phoneNumber: expected.other, digits: expected.other,
    }], `participants, ${ctx}`);
    assert.equal(call.dnis, expected.dnis, `dnis, ${ctx}`);
    assert.equal(call.callType, expected.callType ?? "Internal", `callType, ${ctx}`);
    assert.match(call.duration, /^\d+$/, `duration, ${ctx}`);
    assert.equal(call.mute, "Off", ctx);
    assert.equal(call.monitoring, false, ctx);
    assert.equal(call.supervisorListeningIn, false, ctx);
    assert.equal(call.monitoredUserMuted, false, ctx);
    if (agent.recording) {
        assert.equal(call.recordingState, expected.recordingState, `recordingState, ${ctx}`);
    } else {
        assert.equal("recordingState" in call, false, `no recordingState without api-voice-recording, ${ctx}`);
    }
    assert.deepEqual([...call.capabilities].sort(),
        expectedCapabilities(call.state, expected.recordingState ?? "Stopped", agent.recording), `capabilities, ${ctx}`);
    if (expected.gsipRecord === undefined) {
        assert.equal(call.userData?.GSIP_RECORD, undefined, `no GSIP_RECORD, ${ctx}`);
        if (call.userData !== undefined) {
            assert.ok(Object.keys(call.userData).length > 0, `userData absent when empty, ${ctx}`);
        }
    } else {
        assert.equal(call.userData?.GSIP_RECORD, expected.gsipRecord, `userData.GSIP_RECORD, ${ctx}`);
        const fn = call.userData?.GSIP_REC_FN;
        assert.equal(typeof fn, "string", `GSIP_REC_FN, ${ctx}`);
        assert.ok(fn.includes(call.id), `GSIP_REC_FN names the call, ${ctx}`);
    }
    return call;
}

/** Raw WebSocket upgrade attempt: resolves with "open" or the refusing HTTP status. */
export function wsUpgradeStatus(url, options) {
    return withTimeout(new Promise((resolve, reject) => {
        const ws = new WebSocket(url, options);
        ws.on("open", () => {
            resolve("open");
            ws.close();
        });
        ws.on("unexpected-response", (_req, res) => {
            resolve(res.statusCode);
            res.resume();
            ws.terminate();
        });
        ws.on("error", (e) => reject(e));
    }), 5000, `websocket upgrade ${url}`);
}
