// The agent page: log in (Basic credentials once; the server's HTTP-only session cookie then
// authenticates every request, the CometD handshake and the WebSocket upgrade), set the agent
// state, dial, and act on calls with one button per capability the server lists. The call list
// and the agent state follow the notifications on /v2/me/calls and /v2/me/devices.

import { CometD } from "./cometd/cometd.js";

const $ = (id) => document.getElementById(id);
const state = { device: null, calls: new Map(), cometd: null };

/** Operations whose request takes the row's parameter field, and how. */
const PARAMETER = {
    SingleStepTransfer: (v) => ({ destination: { phoneNumber: v } }),
    SingleStepConference: (v) => ({ destination: { phoneNumber: v } }),
    InitiateTransfer: (v) => ({ destination: { phoneNumber: v } }),
    InitiateConference: (v) => ({ destination: { phoneNumber: v } }),
    RemoveParticipantFromConference: (v) => ({ participant: v }),
    SendDtmf: (v) => ({ digits: v }),
    SetCallDisposition: (v) => ({ disposition: v }),
    AttachUserData: (v) => ({ userData: { note: v } }),
    UpdateUserData: (v) => ({ userData: { note: v } }),
    DeleteUserDataPair: () => ({ key: "note" }),
};

function showError(text) {
    $("error").textContent = text;
}

/** One REST request; resolves with the JSON answer, throws with its statusMessage. */
async function api(method, path, body, headers = {}) {
    const init = { method, headers: { ...headers }, credentials: "same-origin" };
    if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const json = await res.json().catch(() => ({}));
    if (!res.ok || json.statusCode !== 0) {
        throw new Error(`${method} ${path}: ${json.statusMessage ?? res.status} (statusCode ${json.statusCode})`);
    }
    return json;
}

async function act(method, path, body) {
    showError("");
    try {
        await api(method, path, body);
    } catch (e) {
        showError(e.message);
    }
}

function renderDevice() {
    const d = state.device;
    $("dn").textContent = d.phoneNumber;
    const u = d.userState;
    $("user-state").textContent = u.reasonCode ? `${u.displayName} (${u.reasonCode})` : u.displayName;
    $("user-state").dataset.state = u.state;
    $("dnd").textContent = d.doNotDisturb;
}

function renderCalls() {
    const body = $("calls");
    body.replaceChildren();
    for (const call of state.calls.values()) {
        const tr = document.createElement("tr");
        tr.dataset.callId = call.id;
        tr.dataset.state = call.state;
        tr.dataset.recording = call.recordingState ?? "";
        tr.dataset.participants = call.participants.map((p) => p.phoneNumber).join(",");
        const cell = (text, cls) => {
            const td = document.createElement("td");
            td.textContent = text;
            if (cls) {
                td.className = cls;
            }
            tr.append(td);
            return td;
        };
        cell(call.id.slice(0, 8));
        cell(call.state, "state");
        cell(call.callType);
        cell(tr.dataset.participants, "participants");
        cell(call.recordingState ?? "-", "recording");
        cell(call.mute);
        const input = document.createElement("input");
        input.size = 10;
        input.className = "parameter";
        cell("").append(input);
        const ops = cell("");
        for (const op of call.capabilities) {
            const b = document.createElement("button");
            b.textContent = op;
            b.dataset.op = op;
            b.addEventListener("click", () => {
                const extra = PARAMETER[op]?.(input.value.trim()) ?? {};
                act("POST", `/api/v2/me/calls/${call.id}`, { operationName: op, ...extra });
            });
            ops.append(b);
        }
        body.append(tr);
    }
}

function onCall(message) {
    const call = message.data.call;
    if (call.state === "Released") {
        state.calls.delete(call.id);
    } else {
        state.calls.set(call.id, call);
    }
    renderCalls();
}

function onDevice(message) {
    state.device = message.data.devices[0];
    renderDevice();
}

function connect(transport) {
    const cometd = new CometD();
    state.cometd = cometd;
    if (transport === "long-polling") {
        cometd.unregisterTransport("websocket");
    }
    cometd.configure({ url: new URL("/api/v2/notifications", location.href).href });
    cometd.addListener("/meta/connect", (m) => {
        $("status").textContent = m.successful ? `connected (${cometd.getTransport().type})` : "reconnecting";
    });
    return new Promise((resolve, reject) => {
        cometd.handshake((reply) => {
            if (!reply.successful) {
                reject(new Error(`handshake: ${reply.error}`));
                return;
            }
            // Ready once both subscriptions are confirmed: nothing published later is missed.
            let pending = 2;
            const confirmed = (reply) => {
                if (!reply.successful) {
                    reject(new Error(`subscribe ${reply.subscription}: ${reply.error}`));
                } else if (--pending === 0) {
                    $("status").textContent = `connected (${cometd.getTransport().type})`;
                    resolve();
                }
            };
            cometd.batch(() => {
                cometd.subscribe("/v2/me/calls", onCall, confirmed);
                cometd.subscribe("/v2/me/devices", onDevice, confirmed);
            });
        });
    });
}

$("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    const user = $("user").value.trim();
    const password = $("password").value;
    try {
        // Basic credentials once: the answer sets the session cookie used from then on.
        const me = await api("GET", "/api/v2/me", undefined, { Authorization: "Basic " + btoa(`${user}:${password}`) });
        state.device = me.user.devices[0];
        await connect($("transport").value);
        const calls = await api("GET", "/api/v2/me/calls");
        for (const c of calls.calls) {
            state.calls.set(c.id, c);
        }
        $("who").textContent = me.user.userName;
        renderDevice();
        renderCalls();
        $("login").classList.add("hidden");
        $("desk").classList.remove("hidden");
        document.body.dataset.ready = "true";
    } catch (e) {
        showError(e.message);
    }
});

for (const b of document.querySelectorAll("[data-agent]")) {
    b.addEventListener("click", () => {
        const body = { operationName: b.dataset.agent };
        if (body.operationName === "NotReady" && $("reason").value.trim()) {
            body.reasonCode = $("reason").value.trim();
        }
        act("POST", "/api/v2/me/channels/voice", body);
    });
}

$("dnd-toggle").addEventListener("click", () => {
    const op = state.device.doNotDisturb === "On" ? "DoNotDisturbOff" : "DoNotDisturbOn";
    act("POST", `/api/v2/me/devices/${state.device.id}`, { operationName: op });
});

$("dial").addEventListener("click", () => {
    act("POST", `/api/v2/me/devices/${state.device.id}/calls`, {
        operationName: "Dial", destination: { phoneNumber: $("number").value.trim() },
    });
});
