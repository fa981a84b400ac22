// Interop tests: the official CometD JavaScript client (cometd 9.x + cometd-nodejs-client) in Node
// against the bayeux-server binary named by BAYEUX_SERVER_BIN, once per transport.
//
// Run: BAYEUX_SERVER_BIN=target/debug/bayeux-server node --test --test-concurrency=1 tests/interop/node.test.mjs

import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { ClientPool, TRANSPORTS } from "./lib/cometd-node.mjs";
import { startServer } from "./lib/server.mjs";
import { show, sleep, uid, waitFor, withTimeout } from "./lib/util.mjs";

const TEST_TIMEOUT = 20000;
const T = { timeout: TEST_TIMEOUT };

// Every test gets its own server process (started before it, killed after it), so that a server
// that hangs or crashes fails one test only.
let server;

beforeEach(async () => {
    server = undefined;
    server = await startServer();
}, { timeout: 15000 });

afterEach(async () => {
    if (server) {
        await server.stop();
    }
}, { timeout: 10000 });

/** Server output tail, appended to assertion messages. */
function serverLog(srv = server) {
    return srv ? `\n--- server output (tail) ---\n${srv.output().slice(-4000)}` : "";
}

function dataOf(messages) {
    return messages.map((m) => m.data);
}

/** Raw HTTP POST of Bayeux messages (no cookie): returns the parsed reply array. */
async function rawHttp(url, messages) {
    const res = await withTimeout(fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json;charset=UTF-8" },
        body: JSON.stringify(messages),
    }), 5000, `POST ${url}`);
    const text = await res.text();
    assert.equal(res.status, 200, `HTTP status for POST ${url}: ${text}`);
    return JSON.parse(text);
}

/** Raw WebSocket exchange: sends one frame, resolves with the first frame received (parsed). */
function rawWebSocket(url, messages) {
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

test("server answers 402::session_unknown + reconnect:handshake for an unknown clientId (HTTP and WebSocket)", T, async () => {
    const connect = { id: "7", channel: "/meta/connect", clientId: "nosuchclient" + uid(), connectionType: "long-polling" };
    const httpReply = await rawHttp(`${server.cometdUrl}/connect`, [connect]);
    const r1 = httpReply.find((m) => m.channel === "/meta/connect");
    assert.ok(r1, `no /meta/connect reply in ${show(httpReply)}`);
    assert.equal(r1.successful, false);
    assert.equal(r1.id, "7");
    assert.match(String(r1.error), /^402:/);
    assert.equal(r1.advice?.reconnect, "handshake", show(r1));

    const wsUrl = server.cometdUrl.replace(/^http/, "ws");
    const wsReply = await rawWebSocket(wsUrl, [{ ...connect, connectionType: "websocket", id: "8" }]);
    const r2 = wsReply.find((m) => m.channel === "/meta/connect");
    assert.ok(r2, `no /meta/connect reply in ${show(wsReply)}`);
    assert.equal(r2.successful, false);
    assert.equal(r2.id, "8");
    assert.match(String(r2.error), /^402:/);
    assert.equal(r2.advice?.reconnect, "handshake", show(r2));
});

for (const transport of TRANSPORTS) {
    const tag = transport === "websocket" ? "ws" : "lp";

    describe(`cometd js client over ${transport}`, () => {
        const pool = new ClientPool();
        const ch = (name) => `/it/${tag}/${name}/${uid()}`;

        afterEach(async () => {
            await pool.closeAll();
        }, { timeout: 10000 });

        test("handshake", T, async () => {
            const c = pool.create(server.cometdUrl, transport);
            const reply = await c.handshake();
            assert.equal(reply.successful, true);
            assert.equal(reply.channel, "/meta/handshake");
            assert.equal(reply.version, "1.0");
            assert.ok(Array.isArray(reply.supportedConnectionTypes), show(reply));
            assert.ok(reply.supportedConnectionTypes.includes(transport), show(reply));
            const clientId = c.cometd.getClientId();
            assert.match(clientId, /^[A-Za-z0-9]+$/);
            assert.equal(reply.clientId, clientId);
            assert.equal(c.cometd.getTransport().type, transport);
            // The raw handshake reply echoes the request id and carries full advice.
            const sent = c.outgoing.find((m) => m.channel === "/meta/handshake");
            const raw = c.incoming.find((m) => m.channel === "/meta/handshake");
            assert.equal(raw.id, sent.id);
            assert.ok(raw.advice && typeof raw.advice.reconnect === "string", `advice: ${show(raw)}`);
            assert.equal(typeof raw.advice.interval, "number", `advice: ${show(raw)}`);
            assert.equal(typeof raw.advice.timeout, "number", `advice: ${show(raw)}`);
            // The first /meta/connect succeeded and echoed its id.
            const connect = c.incoming.find((m) => m.channel === "/meta/connect" && m.successful);
            assert.ok(c.outgoing.some((m) => m.channel === "/meta/connect" && m.id === connect.id));
            assert.equal(c.cometd.getStatus(), "connected");
        });

        test("subscribe", T, async () => {
            const c = await pool.connect(server.cometdUrl, transport);
            const channel = ch("sub");
            const { reply } = await c.subscribe(channel);
            assert.equal(reply.successful, true);
            assert.equal(reply.subscription, channel);
            const raw = c.incoming.find((m) => m.channel === "/meta/subscribe");
            const sent = c.outgoing.find((m) => m.channel === "/meta/subscribe");
            assert.equal(raw.id, sent.id);
        });

        test("publish and receive (self and another client)", T, async () => {
            const a = await pool.connect(server.cometdUrl, transport);
            const b = await pool.connect(server.cometdUrl, transport);
            const channel = ch("pub");
            await a.subscribe(channel);
            await b.subscribe(channel);
            const payload = { text: "héllo wörld ✓", n: 1, nested: { list: [1, 2, 3], flag: true, nothing: null } };
            const reply = await a.publish(channel, payload);
            assert.equal(reply.successful, true);
            assert.equal(reply.channel, channel);
            assert.ok(!("data" in reply), `publish reply must not carry data: ${show(reply)}`);
            for (const c of [a, b]) {
                await waitFor(() => c.messages(channel).length >= 1, { what: "delivery", details: () => c.diagnostics() + serverLog() });
                const [m] = c.messages(channel);
                assert.equal(m.channel, channel);
                assert.deepEqual(m.data, payload);
            }
            await sleep(200);
            for (const c of [a, b]) {
                const raw = c.deliveries(channel);
                assert.equal(raw.length, 1, `exactly one delivery: ${show(raw)}`);
                assert.ok(!("clientId" in raw[0]), `deliveries must not leak the publisher's clientId: ${show(raw[0])}`);
            }
        });

        test("wildcard subscriptions /a/* and /a/**", T, async () => {
            const base = ch("wc");
            const single = await pool.connect(server.cometdUrl, transport);
            const deep = await pool.connect(server.cometdUrl, transport);
            const both = await pool.connect(server.cometdUrl, transport);
            const pub = await pool.connect(server.cometdUrl, transport);
            await single.subscribe(`${base}/a/*`);
            await deep.subscribe(`${base}/a/**`);
            await both.subscribe(`${base}/a/*`);
            await both.subscribe(`${base}/a/**`);

            for (const suffix of ["/a", "/a/b", "/a/b/c", "/x/b", "/ab/c"]) {
                await pub.publish(`${base}${suffix}`, { to: suffix });
            }
            await pub.publish(`${base}/a/end`, { to: "/a/end" });
            for (const c of [single, deep, both]) {
                await waitFor(() => c.deliveries(`${base}/a/end`).length >= 1, { what: "sentinel", details: () => c.diagnostics() + serverLog() });
            }
            await sleep(100);
            const to = (c) => c.deliveries().map((m) => m.data.to);
            assert.deepEqual(to(single), ["/a/b", "/a/end"], "/a/* matches exactly one more segment");
            assert.deepEqual(to(deep), ["/a/b", "/a/b/c", "/a/end"], "/a/** matches one or more segments");
            // A session subscribed through two matching patterns receives each message once.
            assert.deepEqual(to(both), ["/a/b", "/a/b/c", "/a/end"], "each message once per session");
            // The client dispatches locally to every matching listener.
            assert.deepEqual(dataOf(both.messages(`${base}/a/*`)).map((d) => d.to), ["/a/b", "/a/end"]);
            assert.deepEqual(dataOf(both.messages(`${base}/a/**`)).map((d) => d.to), ["/a/b", "/a/b/c", "/a/end"]);
        });

        test("unsubscribe stops deliveries", T, async () => {
            const sub = await pool.connect(server.cometdUrl, transport);
            const pub = await pool.connect(server.cometdUrl, transport);
            const channel = ch("unsub");
            const sentinel = ch("sentinel");
            const { handle } = await sub.subscribe(channel);
            await sub.subscribe(sentinel);
            await pub.publish(channel, { n: 1 });
            await waitFor(() => sub.deliveries(channel).length === 1, { what: "first delivery", details: () => sub.diagnostics() });
            const reply = await sub.unsubscribe(handle);
            assert.equal(reply.successful, true);
            assert.equal(reply.subscription, channel);
            await pub.publish(channel, { n: 2 });
            await pub.publish(sentinel, { done: true });
            await waitFor(() => sub.deliveries(sentinel).length === 1, { what: "sentinel", details: () => sub.diagnostics() + serverLog() });
            await sleep(200);
            assert.deepEqual(dataOf(sub.deliveries(channel)), [{ n: 1 }], "no delivery after unsubscribe");
        });

        test("batch: subscribe + publishes in one batch", T, async () => {
            const c = await pool.connect(server.cometdUrl, transport);
            const other = await pool.connect(server.cometdUrl, transport);
            const channel = ch("batch");
            await other.subscribe(channel);
            const subscribed = [];
            const published = [];
            // Watch what the transport is asked to send: a batch must go out as one envelope.
            const envelopes = [];
            const t = c.cometd.getTransport();
            const send = t.send;
            t.send = function (envelope, metaConnect) {
                envelopes.push(envelope.messages.map((m) => m.channel));
                return send.call(this, envelope, metaConnect);
            };
            c.messages(channel);
            c.cometd.batch(() => {
                c.cometd.subscribe(channel, (m) => c.messages(channel).push(m), (r) => subscribed.push(r));
                for (let i = 0; i < 5; ++i) {
                    c.cometd.publish(channel, { i }, (r) => published.push(r));
                }
            });
            await waitFor(() => subscribed.length === 1 && published.length === 5, { what: "batch replies", details: () => c.diagnostics() + serverLog() });
            assert.equal(subscribed[0].successful, true, show(subscribed[0]));
            assert.ok(published.every((r) => r.successful), show(published));
            const expected = [0, 1, 2, 3, 4].map((i) => ({ i }));
            // The batch is processed in order: the subscription precedes the publishes, so the publisher sees them too.
            await waitFor(() => c.messages(channel).length === 5, { what: "self deliveries", details: () => c.diagnostics() + serverLog() });
            await waitFor(() => other.messages(channel).length === 5, { what: "deliveries to the other client", details: () => other.diagnostics() });
            assert.deepEqual(dataOf(c.messages(channel)), expected);
            assert.deepEqual(dataOf(other.messages(channel)), expected);
            // The batch went out as one request/frame holding all six messages, subscribe first.
            t.send = send;
            const batchEnvelope = envelopes.find((e) => e.includes("/meta/subscribe"));
            assert.deepEqual(batchEnvelope, ["/meta/subscribe", channel, channel, channel, channel, channel], show(envelopes));
        });

        test("200 published messages arrive in order", T, async () => {
            const sub = await pool.connect(server.cometdUrl, transport);
            const pub = await pool.connect(server.cometdUrl, transport);
            const channel = ch("order");
            await sub.subscribe(channel);
            const replies = [];
            for (let n = 0; n < 200; ++n) {
                replies.push(pub.publish(channel, { n }, 15000));
            }
            await Promise.all(replies);
            await waitFor(() => sub.messages(channel).length >= 200, {
                timeout: 15000,
                what: "200 deliveries",
                details: () => `got ${sub.messages(channel).length}\n${sub.diagnostics()}${serverLog()}`,
            });
            await sleep(200);
            assert.deepEqual(sub.messages(channel).map((m) => m.data.n), Array.from({ length: 200 }, (_, i) => i));
        });

        test("fan-out to 20 clients", T, async () => {
            const channel = ch("fan");
            const subs = await Promise.all(Array.from({ length: 20 }, () => pool.connect(server.cometdUrl, transport)));
            await Promise.all(subs.map((s) => s.subscribe(channel)));
            const pub = await pool.connect(server.cometdUrl, transport);
            for (let k = 0; k < 5; ++k) {
                await pub.publish(channel, { k });
            }
            await waitFor(() => subs.every((s) => s.messages(channel).length >= 5), {
                timeout: 15000,
                what: "5 deliveries at each of 20 clients",
                details: () => subs.map((s, i) => `#${i}: ${s.messages(channel).length}`).join(", ") + serverLog(),
            });
            await sleep(200);
            const ids = new Set(subs.map((s) => s.cometd.getClientId()));
            assert.equal(ids.size, 20, "20 distinct sessions");
            for (const s of subs) {
                assert.deepEqual(s.deliveries(channel).map((m) => m.data.k), [0, 1, 2, 3, 4]);
            }
        });

        test("ack extension: negotiated, messages received exactly once", T, async () => {
            const sub = pool.create(server.cometdUrl, transport, { ack: true });
            await sub.handshake();
            const hs = sub.incoming.find((m) => m.channel === "/meta/handshake");
            const sentHs = sub.outgoing.find((m) => m.channel === "/meta/handshake");
            assert.equal(sentHs.ext?.ack, true, "client asks for acks");
            const ackField = hs.ext?.ack;
            assert.ok(ackField === true || (typeof ackField === "object" && ackField?.enabled === true), `server must enable acks: ${show(hs)}`);
            const pub = await pool.connect(server.cometdUrl, transport);
            const channel = ch("ack");
            await sub.subscribe(channel);
            for (let n = 0; n < 50; ++n) {
                await pub.publish(channel, { n });
            }
            await waitFor(() => sub.messages(channel).length >= 50, { timeout: 15000, what: "50 acked deliveries", details: () => sub.diagnostics() + serverLog() });
            // Let a few more /meta/connect cycles run (acks sent back) and check nothing is redelivered.
            await sleep(1500);
            assert.deepEqual(sub.deliveries(channel).map((m) => m.data.n), Array.from({ length: 50 }, (_, i) => i));
            assert.deepEqual(sub.messages(channel).map((m) => m.data.n), Array.from({ length: 50 }, (_, i) => i));
            // Successful /meta/connect replies carry the batch number; the client echoes it.
            const connectAcks = sub.incoming.filter((m) => m.channel === "/meta/connect" && m.successful && typeof m.ext?.ack === "number").map((m) => m.ext.ack);
            assert.ok(connectAcks.length >= 1, `connect replies carry ext.ack numbers: ${show(sub.incoming.filter((m) => m.channel === "/meta/connect"))}`);
            const sentAcks = sub.outgoing.filter((m) => m.channel === "/meta/connect" && typeof m.ext?.ack === "number").map((m) => m.ext.ack);
            assert.ok(sentAcks.some((n) => connectAcks.includes(n)), `client echoes a received batch number: sent ${sentAcks}, got ${connectAcks}`);
            // Deliveries travel only in /meta/connect responses with ack on: every batch number is increasing.
            for (let i = 1; i < connectAcks.length; ++i) {
                assert.ok(connectAcks[i] >= connectAcks[i - 1], `batch numbers never go back: ${connectAcks}`);
            }
        });

        test("timesync extension", T, async () => {
            const c = pool.create(server.cometdUrl, transport, { timesync: true });
            await c.handshake();
            await waitFor(() => c.incoming.filter((m) => m.channel.startsWith("/meta/") && m.ext?.timesync).length >= 2, {
                what: "two meta replies with ext.timesync",
                details: () => c.diagnostics(),
            });
            const sentTc = new Set(c.outgoing.filter((m) => m.ext?.timesync).map((m) => m.ext.timesync.tc));
            for (const m of c.incoming.filter((m) => m.channel.startsWith("/meta/") && m.ext?.timesync)) {
                const ts = m.ext.timesync;
                for (const k of ["tc", "ts", "p", "a"]) {
                    assert.equal(typeof ts[k], "number", `timesync.${k} in ${show(m)}`);
                }
                assert.ok(sentTc.has(ts.tc), `timesync.tc echoes a client tc: ${show(m)}`);
                assert.ok(ts.p >= 0, `processing time p >= 0: ${show(m)}`);
                assert.ok(Math.abs(ts.ts - Date.now()) < 60000, `ts is a server epoch-ms time: ${show(m)}`);
            }
            const ext = c.cometd.getExtension("timesync");
            // Same machine, same clock: the estimated offset is small and the lag is not negative.
            assert.ok(Math.abs(ext.getTimeOffset()) < 1000, `offset ${ext.getTimeOffset()}`);
            assert.ok(ext.getNetworkLag() >= 0 && ext.getNetworkLag() < 1000, `lag ${ext.getNetworkLag()}`);
        });

        test("disconnect", T, async () => {
            const c = await pool.connect(server.cometdUrl, transport);
            const clientId = c.cometd.getClientId();
            const disconnects = [];
            c.cometd.addListener("/meta/disconnect", (m) => disconnects.push(m));
            const reply = await c.disconnect();
            assert.ok(reply, `a disconnect reply\n${c.diagnostics()}`);
            assert.equal(reply.successful, true, show(reply));
            assert.equal(c.cometd.getStatus(), "disconnected");
            assert.equal(disconnects.length, 1);
            // The /meta/connect held when the disconnect arrived may be released, but not as a failure:
            // a successful:false reply that reaches the client before the disconnect reply (two HTTP
            // connections race) makes the client abort its pending /meta/disconnect and report the
            // disconnect as failed. CometD answers it successful:true with advice reconnect:"none".
            await sleep(300);
            const heldId = c.outgoing.filter((m) => m.channel === "/meta/connect").at(-1).id;
            const released = c.incoming.find((m) => m.channel === "/meta/connect" && m.id === heldId);
            if (released) {
                assert.equal(released.successful, true, `held /meta/connect released by the disconnect: ${show(released)}`);
                assert.notEqual(released.advice?.reconnect, "handshake", `held /meta/connect released by the disconnect: ${show(released)}`);
            }
            // The server forgot the session: a connect with the old clientId is refused with 402 + handshake advice.
            const replies = await rawHttp(`${server.cometdUrl}/connect`, [{ id: "5", channel: "/meta/connect", clientId, connectionType: "long-polling" }]);
            const r = replies.find((m) => m.channel === "/meta/connect");
            assert.equal(r.successful, false, show(r));
            assert.match(String(r.error), /^402:/);
            assert.equal(r.advice?.reconnect, "handshake");
        });

        test("re-handshake after the server forgot the session (server restarted on the same port)", { timeout: 30000 }, async () => {
            const channel = ch("rehs");
            const a = pool.create(server.cometdUrl, transport);
            const subscribedIds = [];
            // The usual CometD idiom: (re)subscribe whenever a handshake succeeds.
            a.cometd.addListener("/meta/handshake", (m) => {
                if (m.successful) {
                    a.cometd.subscribe(channel, (msg) => a.messages(channel).push(msg), (r) => {
                        if (r.successful) {
                            subscribedIds.push(a.cometd.getClientId());
                        }
                    });
                }
            });
            await a.handshake();
            await waitFor(() => subscribedIds.length === 1, { what: "first subscription", details: () => a.diagnostics() });
            const firstId = a.cometd.getClientId();

            const pub1 = await pool.connect(server.cometdUrl, transport);
            await pub1.publish(channel, { phase: 1 });
            await waitFor(() => a.messages(channel).length === 1, { what: "delivery before restart", details: () => a.diagnostics() });
            await pub1.disconnect(2000);

            // Stop the server and start a new one on the same port: it knows nothing of the session.
            const port = server.port;
            await server.stop();
            server = undefined;
            server = await startServer({ port });

            await waitFor(() => a.handshakes.filter((m) => m.successful).length >= 2 && subscribedIds.length >= 2, {
                timeout: 20000,
                what: "a second successful handshake and re-subscription",
                details: () => a.diagnostics() + serverLog(),
            });
            assert.notEqual(a.cometd.getClientId(), firstId, "a new session");
            assert.equal(subscribedIds[1], a.cometd.getClientId());
            // The client followed the server's 402 + reconnect:"handshake" advice.
            const refused = a.incoming.find((m) => m.channel === "/meta/connect" && m.successful === false);
            assert.ok(refused, "a refused /meta/connect preceded the re-handshake");
            assert.match(String(refused.error), /^402:/);
            assert.equal(refused.advice?.reconnect, "handshake");

            const pub2 = await pool.connect(server.cometdUrl, transport);
            await pub2.publish(channel, { phase: 2 });
            await waitFor(() => a.messages(channel).length === 2, { what: "delivery after re-handshake", details: () => a.diagnostics() + serverLog() });
            assert.deepEqual(dataOf(a.messages(channel)), [{ phase: 1 }, { phase: 2 }]);
        });
    });
}
