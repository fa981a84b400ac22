// The official CometD JavaScript client (npm `cometd`, ES modules) running in Node through
// `cometd-nodejs-client`'s adapt(), which installs `window.XMLHttpRequest` (node:http based, with a
// cookie jar), `window.WebSocket` (the `ws` package) and `window.setTimeout/clearTimeout` on a
// global `window` object. adapt() must run before the first `new CometD()`: the CometD constructor
// looks at `window.WebSocket` to decide whether to register the websocket transport.
//
// Note: the adapter's cookie jar is per process and per host name (not per port, not per client),
// so every CometD instance in one test process shares one BAYEUX_BROWSER cookie towards
// 127.0.0.1, like tabs of one browser.

import { adapt } from "cometd-nodejs-client";
import { CometD, Extension, AckExtension, TimeSyncExtension } from "cometd";
import { copy, show, waitFor, withTimeout } from "./util.mjs";

adapt();

export { CometD, AckExtension, TimeSyncExtension };

export const TRANSPORTS = ["websocket", "long-polling"];

/** Records every message the client receives (before other extensions) and sends (after them). */
class RecorderExtension extends Extension {
    constructor(client) {
        super();
        this.client = client;
    }

    incoming(message) {
        this.client.incoming.push(copy(message));
        return message;
    }

    outgoing(message) {
        this.client.outgoing.push(copy(message));
        return message;
    }
}

/**
 * One CometD client restricted to a single transport, with promise-returning helpers.
 * `incoming` / `outgoing` hold copies of every Bayeux message that crossed the wire.
 */
export class TestClient {
    constructor(url, transport, { ack = false, timesync = false, name } = {}) {
        this.url = url;
        this.transport = transport;
        this.incoming = [];
        this.outgoing = [];
        this.handshakes = [];
        this.connects = [];
        this.received = new Map();

        const cometd = new CometD(name);
        for (const type of cometd.getTransportTypes()) {
            if (type !== transport) {
                cometd.unregisterTransport(type);
            }
        }
        if (cometd.getTransportTypes().join() !== transport) {
            throw new Error(`could not restrict the client to transport ${transport}: ${cometd.getTransportTypes()}`);
        }
        cometd.configure({
            url,
            logLevel: process.env.BAYEUX_CLIENT_LOG || "warn",
            // Never use a Worker-based scheduler (there is none in Node anyway).
            useWorkerScheduler: false,
        });
        // Registered first: sees incoming messages first and outgoing messages last.
        cometd.registerExtension("interop-recorder", new RecorderExtension(this));
        if (ack) {
            cometd.registerExtension("ack", new AckExtension());
        }
        if (timesync) {
            cometd.registerExtension("timesync", new TimeSyncExtension());
        }
        cometd.addListener("/meta/handshake", (m) => this.handshakes.push(copy(m)));
        cometd.addListener("/meta/connect", (m) => this.connects.push(copy(m)));
        this.cometd = cometd;
    }

    /** Non-meta messages with `data` received from the server (raw, as on the wire). */
    deliveries(channel) {
        return this.incoming.filter((m) => !m.channel.startsWith("/meta/") && "data" in m && (channel === undefined || m.channel === channel));
    }

    /** Messages handed to this client's subscription callbacks registered through `subscribe()`. */
    messages(subscription) {
        let list = this.received.get(subscription);
        if (!list) {
            list = [];
            this.received.set(subscription, list);
        }
        return list;
    }

    diagnostics() {
        const tail = (list) => show(list.slice(-12));
        return `client ${this.cometd.getClientId()} (${this.transport}) status=${this.cometd.getStatus()}\n` +
            `  last outgoing: ${tail(this.outgoing)}\n  last incoming: ${tail(this.incoming)}`;
    }

    /** Handshakes and waits for the first successful /meta/connect. Resolves with the handshake reply. */
    async handshake(timeout = 10000) {
        const reply = await withTimeout(new Promise((resolve, reject) => {
            this.cometd.handshake((m) => (m.successful ? resolve(m) : reject(new Error("handshake failed: " + show(m)))));
        }), timeout, `handshake over ${this.transport}\n${this.diagnostics()}`);
        await waitFor(() => this.connects.some((m) => m.successful), {
            timeout,
            what: `first successful /meta/connect over ${this.transport}`,
            details: () => this.diagnostics(),
        });
        return reply;
    }

    /** Subscribes; resolves with { reply, handle } once the server confirmed the subscription. */
    subscribe(channel, callback, timeout = 10000) {
        const list = this.messages(channel);
        let handle;
        const promise = new Promise((resolve, reject) => {
            handle = this.cometd.subscribe(channel, (m) => {
                list.push(copy(m));
                if (callback) {
                    callback(m);
                }
            }, (reply) => (reply.successful ? resolve({ reply, handle }) : reject(new Error("subscribe failed: " + show(reply)))));
        });
        return withTimeout(promise, timeout, `subscribe ${channel}\n${this.diagnostics()}`);
    }

    unsubscribe(handle, timeout = 10000) {
        const promise = new Promise((resolve, reject) => {
            this.cometd.unsubscribe(handle, (reply) => (reply.successful ? resolve(reply) : reject(new Error("unsubscribe failed: " + show(reply)))));
        });
        return withTimeout(promise, timeout, `unsubscribe ${handle && handle.channel}\n${this.diagnostics()}`);
    }

    /** Publishes; resolves with the publish reply (rejects when unsuccessful). */
    publish(channel, data, timeout = 10000) {
        const promise = new Promise((resolve, reject) => {
            this.cometd.publish(channel, data, (reply) => (reply.successful ? resolve(reply) : reject(new Error("publish failed: " + show(reply)))));
        });
        return withTimeout(promise, timeout, `publish to ${channel}\n${this.diagnostics()}`);
    }

    /** Disconnects; resolves with the reply, or null when none came within `timeout`. Never rejects. */
    async disconnect(timeout = 5000) {
        if (this.cometd.isDisconnected()) {
            return null;
        }
        try {
            return await withTimeout(new Promise((resolve) => {
                this.cometd.disconnect((reply) => resolve(reply));
            }), timeout, "disconnect");
        } catch {
            return null;
        }
    }
}

/** Tracks the clients a test creates so that they are all disconnected afterwards. */
export class ClientPool {
    constructor() {
        this.clients = [];
    }

    create(url, transport, options) {
        const client = new TestClient(url, transport, options);
        this.clients.push(client);
        return client;
    }

    /** Creates a client and completes its handshake. */
    async connect(url, transport, options) {
        const client = this.create(url, transport, options);
        await client.handshake();
        return client;
    }

    async closeAll() {
        const clients = this.clients;
        this.clients = [];
        await Promise.all(clients.map((c) => c.disconnect(3000)));
    }
}
