// Runs the official CometD JavaScript client (ES modules served from node_modules/cometd) in the
// browser against the Bayeux server named by the `url` query parameter, restricted to the transport
// named by `transport`. The test drives it through window.__interop (see browser.test.mjs).

import { CometD } from "/cometd/cometd.js";

const params = new URLSearchParams(window.location.search);
const url = params.get("url");
const transport = params.get("transport");
const channel = params.get("channel");

const state = {
    phase: "starting",
    transport: null,
    clientId: null,
    handshake: null,
    subscribe: null,
    received: [],
    publishReplies: [],
    errors: [],
    log: [],
};
window.__interop = state;

// A JSON copy of a reply: failure replies hold live transport objects (circular), elided here.
function clean(value) {
    const seen = new WeakSet();
    return JSON.parse(JSON.stringify(value, (key, v) => {
        if (key === "transport" || key === "xhr" || key === "webSocket") {
            return v && typeof v === "object" ? "[elided]" : v;
        }
        if (v && typeof v === "object") {
            if (seen.has(v)) {
                return "[circular]";
            }
            seen.add(v);
        }
        return v;
    }) ?? "null");
}

function log(...args) {
    const line = args.map((a) => (typeof a === "string" ? a : JSON.stringify(clean(a)))).join(" ");
    state.log.push(line);
    document.getElementById("log").textContent += line + "\n";
}

window.addEventListener("error", (e) => state.errors.push("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => state.errors.push("unhandled rejection: " + e.reason));

try {
    const cometd = new CometD();
    for (const type of cometd.getTransportTypes()) {
        if (type !== transport) {
            cometd.unregisterTransport(type);
        }
    }
    if (cometd.getTransportTypes().join() !== transport) {
        throw new Error("transport " + transport + " not available: " + cometd.getTransportTypes());
    }
    cometd.configure({ url, logLevel: params.get("logLevel") || "info" });
    cometd.addListener("/meta/unsuccessful", (m) => log("unsuccessful", m));

    /** Publishes n messages in sequence, each after the previous reply; resolves with the replies. */
    state.publish = async (from, count) => {
        const replies = [];
        for (let n = 0; n < count; ++n) {
            replies.push(clean(await new Promise((resolve) => cometd.publish(channel, { from, n }, resolve))));
        }
        state.publishReplies.push(...replies);
        return replies;
    };
    state.disconnect = () => new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ timedOut: true }), 5000);
        cometd.disconnect((reply) => {
            clearTimeout(timer);
            state.phase = "disconnected";
            resolve(clean(reply));
        });
    });

    state.phase = "handshaking";
    cometd.handshake((reply) => {
        state.handshake = clean(reply);
        log("handshake", reply);
        if (!reply.successful) {
            state.phase = "handshake-failed";
            return;
        }
        state.clientId = cometd.getClientId();
        state.transport = cometd.getTransport().type;
        state.phase = "subscribing";
        cometd.subscribe(channel, (message) => {
            state.received.push(clean(message.data));
        }, (subscribeReply) => {
            state.subscribe = clean(subscribeReply);
            log("subscribe", subscribeReply);
            state.phase = subscribeReply.successful ? "subscribed" : "subscribe-failed";
        });
    });
} catch (x) {
    state.errors.push(String(x && x.stack || x));
    state.phase = "error";
}
