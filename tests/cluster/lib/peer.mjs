// Official CometD JavaScript clients (npm `cometd` + `cometd-nodejs-client`, from
// tests/interop/node_modules) as cluster peers, each pinned to a node through nginx by its own
// BAYEUX_BROWSER cookie:
// - long-polling: the cookie goes in `requestHeaders` (the XHR adapter sends it on every request);
// - websocket: cometd's WebSocketTransport does `new window.WebSocket(url)` with no options and
//   the adapter installs the `ws` class unchanged (no cookies). A browser sends its cookies on the
//   upgrade by itself; here `window.WebSocket` is a `ws` subclass that does the same, taking the
//   cookie value from the URL's `bayeux_browser` query parameter (ignored by the server).
// Subscriptions are made in the /meta/handshake listener, as CometD recommends, so a client that
// re-handshakes on another node (its node died) subscribes again there.

import { CometD } from "../../interop/lib/cometd-node.mjs";
import { adapt } from "../../interop/node_modules/cometd-nodejs-client/cometd-nodejs-client.js";
import { WebSocket } from "../../interop/node_modules/ws/wrapper.mjs";
import { show, waitFor, withTimeout } from "../../interop/lib/util.mjs";

// Our own handle on the adapter's shared cookie jar (per host name), to clear it.
const xhrOptions = {};
adapt(xhrOptions);

class StickyWebSocket extends WebSocket {
    constructor(url, protocols) {
        const cookie = new URL(url).searchParams.get("bayeux_browser");
        super(url, protocols, cookie ? { headers: { Cookie: `BAYEUX_BROWSER=${cookie}` } } : {});
    }
}
globalThis.window.WebSocket = StickyWebSocket;

/** Forgets the cookies servers set (the adapter shares one jar per host name). */
export function clearCookieJar() {
    for (const k of Object.keys(xhrOptions.globalCookies || {})) {
        delete xhrOptions.globalCookies[k];
    }
}

export function basic(user, password = "password") {
    return "Basic " + Buffer.from(`${user}:${password}`, "utf8").toString("base64");
}

export class Peer {
    /**
     * @param name for messages
     * @param opts.url Bayeux endpoint (through nginx)
     * @param opts.transport "websocket" | "long-polling"
     * @param opts.cookie BAYEUX_BROWSER value (null: none, the client keeps what servers set)
     * @param opts.channels subscribed at every successful handshake
     * @param opts.user Basic credentials (password "password") for the voice endpoint
     */
    constructor(name, { url, transport, cookie = null, channels = [], user = null }) {
        this.name = name;
        this.transport = transport;
        this.channels = channels;
        this.received = [];
        this.handshakes = 0;
        this.subscribedAt = 0;
        this.connected = false;
        this.failures = [];
        const u = new URL(url);
        const requestHeaders = {};
        if (cookie) {
            if (transport === "websocket") {
                u.searchParams.set("bayeux_browser", cookie);
            } else {
                requestHeaders.Cookie = `BAYEUX_BROWSER=${cookie}`;
            }
        }
        if (user) {
            if (transport === "websocket") {
                // `ws` sends URL user info as Authorization: Basic on the upgrade.
                u.username = user;
                u.password = "password";
            } else {
                requestHeaders.Authorization = basic(user);
            }
        }
        const cometd = new CometD(name);
        for (const t of cometd.getTransportTypes()) {
            if (t !== transport) {
                cometd.unregisterTransport(t);
            }
        }
        cometd.configure({
            url: u.href,
            logLevel: process.env.BAYEUX_CLIENT_LOG || "warn",
            useWorkerScheduler: false,
            requestHeaders,
            // Retry quickly when a node goes away.
            backoffIncrement: 250,
            maxBackoff: 2000,
        });
        cometd.addListener("/meta/handshake", (m) => {
            if (m.successful) {
                this.handshakes += 1;
                this.#subscribe();
            } else {
                this.failures.push(m);
            }
        });
        cometd.addListener("/meta/connect", (m) => {
            this.connected = m.successful === true;
        });
        this.cometd = cometd;
    }

    #subscribe() {
        if (this.channels.length === 0) {
            this.subscribedAt = this.handshakes;
            return;
        }
        let pending = this.channels.length;
        const generation = this.handshakes;
        this.cometd.batch(() => {
            for (const ch of this.channels) {
                this.cometd.subscribe(ch, (m) => {
                    this.received.push({ channel: m.channel, data: m.data, at: Date.now() });
                }, (reply) => {
                    if (reply.successful) {
                        pending -= 1;
                        if (pending === 0) {
                            this.subscribedAt = generation;
                        }
                    } else {
                        this.failures.push(reply);
                    }
                });
            }
        });
    }

    /** Handshakes and waits until connected and subscribed. */
    async start(timeout = 10000) {
        this.cometd.handshake();
        await waitFor(() => this.connected && this.subscribedAt === this.handshakes && this.handshakes > 0, {
            timeout, what: `${this.name}: handshake, connect and subscribe`,
            details: () => this.diagnostics(),
        });
        return this;
    }

    /** Publishes and waits for the reply (so one peer's publishes are in order). */
    publish(channel, data, timeout = 10000) {
        return withTimeout(new Promise((resolve, reject) => {
            this.cometd.publish(channel, data, (reply) => (reply.successful ? resolve(reply) : reject(new Error(`${this.name}: publish failed: ${show(reply)}`))));
        }), timeout, `${this.name}: publish to ${channel}`);
    }

    /** Non-probe deliveries on `channel`. */
    messages(channel) {
        return this.received.filter((m) => (channel === undefined || m.channel === channel) && !(m.data && m.data.probe));
    }

    diagnostics() {
        return `${this.name} (${this.transport}) clientId=${this.cometd.getClientId()} status=${this.cometd.getStatus()} ` +
            `handshakes=${this.handshakes} subscribedAt=${this.subscribedAt} connected=${this.connected} ` +
            `received=${this.received.length} failures=${show(this.failures.slice(-3))}`;
    }

    async stop(timeout = 3000) {
        if (this.cometd.isDisconnected()) {
            return;
        }
        try {
            await withTimeout(new Promise((resolve) => this.cometd.disconnect(() => resolve())), timeout, "disconnect");
        } catch {
            // the node may be gone
        }
    }
}
