// Cluster tests: three bayeux-server nodes joined by one Redis, nginx in front with the documented
// sticky-session configuration, official CometD JavaScript clients (Node) as subscribers and
// publishers over WebSocket and long-polling. Each client is pinned to a node by its own
// BAYEUX_BROWSER cookie (lib/peer.mjs); nginx's X-Bayeux-Node header tells which cookie goes where.
//
// Run: BAYEUX_SERVER_BIN=target/release/bayeux-server tests/cluster/run.sh

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { sleep, uid, waitFor } from "../interop/lib/util.mjs";
import {
    Nginx, Redis, TEMPLATE, dropped, freePort, metrics, nodeOfCookie, placeCookies, startNode, waitConnected,
} from "./lib/cluster.mjs";
import { Peer, basic, clearCookieJar } from "./lib/peer.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const T = { timeout: 60000 };

let redis;
let nodes = [];
let nginx;
let cookies;
let extra = [];
let peers = [];

function log(...args) {
    console.log("#", ...args);
}

before(async () => {
    redis = new Redis(await freePort());
    await redis.start();
    nodes = await Promise.all([0, 1, 2].map(() => startNode(redis.url)));
    nginx = new Nginx(nodes);
    await nginx.start();
    await waitConnected(nodes);
    cookies = await placeCookies(nginx, nodes, 12, `c${uid(6)}`);
    log(`redis :${redis.port}, nodes :${nodes.map((n) => n.port).join(" :")}, nginx :${nginx.port}`);
}, { timeout: 60000 });

afterEach(async () => {
    const list = peers;
    peers = [];
    await Promise.all(list.map((p) => p.stop(2000)));
    clearCookieJar();
}, { timeout: 15000 });

after(async () => {
    await Promise.all(peers.map((p) => p.stop(1000)));
    if (nginx) {
        await nginx.stop();
    }
    for (const s of [...nodes, ...extra]) {
        if (s && s.stop) {
            await s.stop();
        } else if (s && s.kill) {
            await s.kill();
        }
    }
    if (redis) {
        await redis.kill();
    }
}, { timeout: 30000 });

const nextCookie = nodes.map(() => 0);

/** An official CometD client pinned (by cookie, through nginx) to node `i`. */
function peer(name, i, transport, channels, { path: p = "/cometd", user = null } = {}) {
    const cookie = cookies[i][(nextCookie[i] = (nextCookie[i] || 0) + 1) % cookies[i].length];
    const pe = new Peer(name, { url: `${nginx.baseUrl}${p}`, transport, cookie, channels, user });
    pe.node = i;
    pe.cookie = cookie;
    peers.push(pe);
    return pe;
}

function nodeLogs() {
    return nodes.map((n, i) => `--- node ${i + 1} (:${n.port}) ---\n${n.output().slice(-3000)}`).join("\n");
}

/**
 * Publishes probes from every publisher until every subscriber has seen one from each: the
 * nodes' Redis subscriptions are then in place (they follow local subscriptions asynchronously).
 */
async function warmUp(publishers, subscribers, channel, timeout = 15000) {
    const seen = () => subscribers.every((s) => publishers.every((p) => s.received.some((m) => m.data && m.data.probe === p.name)));
    const deadline = Date.now() + timeout;
    while (!seen()) {
        if (Date.now() > deadline) {
            throw new Error(`cross-node delivery not established on ${channel}\n` +
                subscribers.map((s) => s.diagnostics()).join("\n") + "\n" + nodeLogs());
        }
        await Promise.all(publishers.map((p) => p.publish(channel, { probe: p.name })));
        await sleep(100);
    }
}

function seqsFrom(sub, channel, pub) {
    return sub.messages(channel).filter((m) => m.data.from === pub.name).map((m) => m.data.seq);
}

function range(n) {
    return Array.from({ length: n }, (_, k) => k);
}

async function sumMetric(name) {
    const all = await Promise.all(nodes.filter((n) => !n.exited).map(metrics));
    return all.reduce((a, m) => a + (m[name] || 0), 0);
}

test("the nginx configuration under test is the documented one", () => {
    const block = (text) => {
        const m = /# ---- BEGIN bayeux sticky sessions ----\n[\s\S]*?# ---- END bayeux sticky sessions ----\n/.exec(text);
        assert.ok(m, "marked block present");
        return m[0].split("\n").map((l) => l.trimStart()).join("\n");
    };
    const readme = fs.readFileSync(path.join(here, "..", "..", "crates", "bayeux-redis", "README.md"), "utf8");
    assert.equal(block(readme), block(fs.readFileSync(TEMPLATE, "utf8")));
});

test("broadcast: every subscriber on every node gets every message exactly once, in publisher order, over websocket and long-polling", T, async () => {
    const base = `/cluster/${uid()}`;
    const ch = `${base}/news`;
    const subs = [];
    for (let i = 0; i < 3; ++i) {
        subs.push(peer(`ws-sub@${i + 1}`, i, "websocket", [ch]));
        // A wildcard on the same node: the node holds both an exact Redis subscription and a
        // glob, Redis sends it every message twice, the node delivers once.
        subs.push(peer(`lp-sub@${i + 1}`, i, "long-polling", [`${base}/**`]));
    }
    const pubs = [
        peer("pub@1", 0, "websocket", []),
        peer("pub@2", 1, "long-polling", []),
        peer("pub@3", 2, "websocket", []),
    ];
    await Promise.all([...subs, ...pubs].map((p) => p.start()));
    const sessions = await Promise.all(nodes.map(async (n) => (await metrics(n)).bayeux_sessions));
    assert.deepEqual(sessions, [3, 3, 3], "each node holds its two subscribers and its publisher");
    await warmUp(pubs, subs, ch);
    const dupsBefore = await sumMetric("bayeux_redis_duplicates_total");

    const N = 200;
    const started = Date.now();
    await Promise.all(pubs.map(async (p) => {
        for (let k = 0; k < N; ++k) {
            await p.publish(ch, { from: p.name, seq: k });
        }
    }));
    const published = Date.now();
    await waitFor(() => subs.every((s) => s.messages(ch).length >= 3 * N), {
        timeout: 20000, what: `${3 * N} messages at every subscriber`,
        details: () => subs.map((s) => s.diagnostics()).join("\n") + "\n" + nodeLogs(),
    });
    const done = Date.now();
    await sleep(500);
    for (const s of subs) {
        assert.equal(s.messages(ch).length, 3 * N, `${s.name}: exactly ${3 * N} messages`);
        for (const p of pubs) {
            assert.deepEqual(seqsFrom(s, ch, p), range(N), `${s.name} from ${p.name}: once each, in order`);
        }
    }
    const dups = (await sumMetric("bayeux_redis_duplicates_total")) - dupsBefore;
    assert.ok(dups >= 2 * 3 * N, `second copies skipped by the nodes: ${dups}`);
    assert.equal(await sumMetric("bayeux_redis_invalid_total"), 0);
    log(`broadcast: ${3 * N} publishes (3 publishers, sequential each) in ${published - started} ms; ` +
        `all ${subs.length} subscribers complete ${done - started} ms after the first publish`);
});

test("a client without a cookie reaches a node, settles on its cookie's node and receives from the others", T, async () => {
    const ch = `/cluster/${uid()}/fresh`;
    const fresh = new Peer("fresh-lp", { url: `${nginx.baseUrl}/cometd`, transport: "long-polling", cookie: null, channels: [ch] });
    peers.push(fresh);
    await fresh.start(15000);
    const pubs = [peer("pub@1", 0, "websocket", []), peer("pub@2", 1, "websocket", []), peer("pub@3", 2, "websocket", [])];
    await Promise.all(pubs.map((p) => p.start()));
    await warmUp(pubs, [fresh], ch);
    for (const p of pubs) {
        await p.publish(ch, { from: p.name, seq: 0 });
    }
    await waitFor(() => fresh.messages(ch).length >= 3, { timeout: 5000, what: "3 messages", details: () => fresh.diagnostics() });
    await sleep(300);
    assert.equal(fresh.messages(ch).length, 3);
    // The first handshake goes by client address; if the cookie the node set hashes to another
    // node, that node answers 402 and the client handshakes again there, once.
    assert.ok(fresh.handshakes <= 2, `handshakes: ${fresh.handshakes}`);
    log(`cookie-less first contact: ${fresh.handshakes} handshake(s)`);
});

test("voice across nodes: A's REST call hits node 1, A's session on node 2 gets the notification, B's on node 3 its own, C nothing", T, async () => {
    const NOTIFY = "/api/v2/notifications";
    const CALLS = "/v2/me/calls";
    const a = peer("agent1@2", 1, "websocket", [CALLS], { path: NOTIFY, user: "agent1" });
    const b = peer("agent2@3", 2, "long-polling", [CALLS], { path: NOTIFY, user: "agent2" });
    const c = peer("agent3@1", 0, "long-polling", [CALLS], { path: NOTIFY, user: "agent3" });
    await Promise.all([a, b, c].map((p) => p.start()));
    // Per-user delivery channels are subscribed on the nodes holding the users' sessions.
    await waitFor(() => {
        const n = redis.numsub("bayeux:u:agent1", "bayeux:u:agent2", "bayeux:u:agent3");
        return n["bayeux:u:agent1"] === 1 && n["bayeux:u:agent2"] === 1 && n["bayeux:u:agent3"] === 1;
    }, { timeout: 10000, interval: 50, what: "per-user Redis subscriptions" });

    const restCookie = cookies[0][0];
    const rest = async (method, p, user, body) => {
        const res = await fetch(nginx.baseUrl + p, {
            method,
            headers: {
                Authorization: basic(user), Cookie: `BAYEUX_BROWSER=${restCookie}`,
                ...(body ? { "Content-Type": "application/json" } : {}),
            },
            body: body ? JSON.stringify(body) : undefined,
        });
        const json = await res.json();
        const upstream = Number((res.headers.get("x-bayeux-node") || "").split(":").pop());
        assert.equal(upstream, nodes[0].port, `${method} ${p} served by node 1`);
        assert.equal(res.status, 200, JSON.stringify(json));
        assert.equal(json.statusCode, 0, JSON.stringify(json));
        return json;
    };
    const device = (await rest("GET", "/api/v2/me/devices", "agent1")).devices[0];
    await rest("POST", `/api/v2/me/devices/${device.id}/calls`, "agent1", { operationName: "Dial", destination: { phoneNumber: "15001" } });
    const state = (p, i) => p.messages(CALLS)[i]?.data?.call?.state;
    await waitFor(() => state(a, 0) === "Dialing" && state(b, 0) === "Ringing", {
        timeout: 5000, what: "A Dialing on node 2, B Ringing on node 3",
        details: () => [a, b, c].map((p) => `${p.diagnostics()} ${JSON.stringify(p.messages(CALLS).map((m) => m.data?.call?.state))}`).join("\n"),
    });
    const callId = a.messages(CALLS)[0].data.call.id;
    await rest("POST", `/api/v2/me/calls/${callId}`, "agent1", { operationName: "Hangup" });
    await waitFor(() => state(a, 1) === "Released" && state(b, 1) === "Released", { timeout: 5000, what: "Released on both" });
    await sleep(500);
    assert.deepEqual(a.messages(CALLS).map((m) => m.data.call.state), ["Dialing", "Released"]);
    assert.deepEqual(b.messages(CALLS).map((m) => m.data.call.state), ["Ringing", "Released"]);
    assert.equal(c.messages(CALLS).length, 0, "agent3 (on the node that served the REST calls) gets nothing");
    for (const p of [a, b]) {
        assert.ok(p.messages(CALLS).every((m) => m.channel === CALLS));
    }
});

/**
 * One publisher per node streams numbered messages (each waits for its publish reply) while
 * `fault` runs; subscribers (websocket and long-polling) on every node record. Returns what was
 * sent, with publish times and durations.
 */
async function streamThrough(fault, { gapMs = 20, settleMs = 1000 } = {}) {
    const ch = `/cluster/${uid()}/stream`;
    const subs = [];
    for (let i = 0; i < 3; ++i) {
        subs.push(peer(`ws-sub@${i + 1}`, i, "websocket", [ch]));
        subs.push(peer(`lp-sub@${i + 1}`, i, "long-polling", [ch]));
    }
    const pubs = [peer("pub@1", 0, "long-polling", []), peer("pub@2", 1, "websocket", []), peer("pub@3", 2, "long-polling", [])];
    await Promise.all([...subs, ...pubs].map((p) => p.start()));
    await warmUp(pubs, subs, ch);
    let streaming = true;
    const sent = pubs.map(() => []);
    const loops = pubs.map(async (p, i) => {
        for (let k = 0; streaming; ++k) {
            const t = Date.now();
            await p.publish(ch, { from: p.name, seq: k });
            sent[i].push({ seq: k, t, took: Date.now() - t });
            await sleep(gapMs);
        }
    });
    const marks = await fault();
    streaming = false;
    await Promise.all(loops);
    await sleep(settleMs);
    return { ch, subs, pubs, sent, marks };
}

/**
 * Checks a stream: everywhere in order and without duplicates; on the publisher's own node
 * complete; on the other nodes complete up to the fault and from some point after it on.
 * Returns the worst delay, after `outageEnd`, of the point from which cross-node delivery was
 * complete again.
 */
function checkStream({ ch, subs, pubs, sent }, outageStart, outageEnd, what) {
    let worstResume = 0;
    for (const s of subs) {
        for (const [i, p] of pubs.entries()) {
            const seqs = seqsFrom(s, ch, p);
            for (let k = 1; k < seqs.length; ++k) {
                assert.ok(seqs[k - 1] < seqs[k], `${what}: ${s.name} from ${p.name}: duplicate or reordering at ${seqs[k - 1]}, ${seqs[k]}`);
            }
            const all = sent[i].map((x) => x.seq);
            if (s.node === i) {
                assert.deepEqual(seqs, all, `${what}: ${s.name} lost local messages of ${p.name}`);
                continue;
            }
            const got = new Set(seqs);
            const missing = all.filter((q) => !got.has(q));
            for (const q of missing) {
                assert.ok(sent[i][q].t >= outageStart - 200, `${what}: ${s.name} lost ${p.name}#${q}, published before the fault`);
            }
            const last = missing.length ? missing[missing.length - 1] : -1;
            assert.ok(last + 1 < all.length, `${what}: ${s.name} never heard ${p.name} again`);
            if (last >= 0) {
                worstResume = Math.max(worstResume, sent[i][last + 1].t - outageEnd);
            }
        }
    }
    return worstResume;
}

function countLines(text, needle) {
    return text.split("\n").filter((l) => l.includes(needle)).length;
}

test("Redis restarted mid-stream: local delivery continues, cross-node delivery resumes within seconds, no duplicates", T, async () => {
    const before = await Promise.all(nodes.map(metrics));
    const logsBefore = nodes.map((n) => countLines(n.output(), "redis unreachable"));
    const stream = await streamThrough(async () => {
        await sleep(1000);
        const down = Date.now();
        await redis.kill("SIGKILL");
        await sleep(1500);
        await redis.start();
        const up = Date.now();
        await waitConnected(nodes, 15000);
        await sleep(3000);
        return { down, up };
    });
    const { down, up } = stream.marks;
    const resume = checkStream(stream, down, up, "redis restart");
    const afterM = await Promise.all(nodes.map(metrics));
    for (const [i, m] of afterM.entries()) {
        assert.ok(dropped(m) > dropped(before[i]), `node ${i + 1} counted dropped cross-node publishes`);
        assert.equal(m.bayeux_redis_outages_total - before[i].bayeux_redis_outages_total, 1, `node ${i + 1}: one outage`);
        assert.equal(m.bayeux_redis_connected, 1);
        assert.equal(countLines(nodes[i].output(), "redis unreachable") - logsBefore[i], 1, `node ${i + 1} logs the outage once`);
    }
    const slowest = Math.max(...stream.sent.flat().map((x) => x.took));
    log(`redis restart: cross-node delivery resumed at most ${resume} ms after Redis was back; slowest publish reply ${slowest} ms`);
    assert.ok(resume < 5000, `resumed ${resume} ms after the restart`);
});

test("slow Redis (frozen with SIGSTOP): publishes never wait for it, local delivery is complete, cross-node resumes", T, async () => {
    const before = await Promise.all(nodes.map(metrics));
    const stream = await streamThrough(async () => {
        await sleep(800);
        const down = Date.now();
        redis.signal("SIGSTOP");
        await sleep(2500);
        redis.signal("SIGCONT");
        const up = Date.now();
        await waitConnected(nodes, 15000);
        await sleep(3000);
        return { down, up };
    });
    const { down, up } = stream.marks;
    const resume = checkStream(stream, down, up, "frozen redis");
    const during = stream.sent.flat().filter((x) => x.t >= down && x.t < up);
    const slowest = Math.max(...during.map((x) => x.took));
    assert.ok(during.length > 50, `published while frozen: ${during.length}`);
    assert.ok(slowest < 1000, `a publish reply waited ${slowest} ms for Redis`);
    const afterM = await Promise.all(nodes.map(metrics));
    assert.ok(afterM.some((m, i) => dropped(m) > dropped(before[i])), "dropped cross-node publishes counted");
    log(`frozen redis: ${during.length} publishes while frozen, slowest reply ${slowest} ms; resumed ${resume} ms after SIGCONT`);
});

test("corrupt and foreign messages on a backplane channel are ignored and counted", T, async () => {
    const ch = `/cluster/${uid()}/garbage`;
    const subs = [0, 1, 2].map((i) => peer(`sub@${i + 1}`, i, i === 1 ? "long-polling" : "websocket", [ch]));
    const pub = peer("pub@1", 0, "long-polling", []);
    await Promise.all([...subs, pub].map((p) => p.start()));
    await warmUp([pub], subs, ch);
    const invalidBefore = await sumMetric("bayeux_redis_invalid_total");
    const garbage = ["garbage", "", `{"channel":"${ch}","data":{"forged":true}}`, "\u0001short"];
    for (const g of garbage) {
        redis.cliRun("PUBLISH", `bayeux:c:${ch}`, g);
    }
    await waitFor(async () => (await sumMetric("bayeux_redis_invalid_total")) - invalidBefore >= 3 * garbage.length, {
        timeout: 5000, interval: 50, what: "every node counts every bad message",
    });
    assert.equal((await sumMetric("bayeux_redis_invalid_total")) - invalidBefore, 3 * garbage.length);
    await pub.publish(ch, { from: pub.name, seq: 0 });
    await waitFor(() => subs.every((s) => s.messages(ch).length === 1), { timeout: 5000, what: "the good message everywhere" });
    await sleep(200);
    for (const s of subs) {
        assert.deepEqual(s.messages(ch).map((m) => m.data), [{ from: pub.name, seq: 0 }], s.name);
    }
});

test("Redis unreachable at start: the node starts, serves locally, logs, and joins when Redis comes", T, async () => {
    const port = await freePort();
    const started = Date.now();
    const lonely = await startNode(`redis://127.0.0.1:${port}`);
    extra.push(lonely);
    log(`node with unreachable Redis listening after ${Date.now() - started} ms`);
    const health = await fetch(`${lonely.baseUrl}/healthz`);
    assert.equal(health.status, 200);
    const ch = `/cluster/${uid()}/local`;
    const sub = new Peer("local-sub", { url: `${lonely.baseUrl}/cometd`, transport: "websocket", cookie: "lonelysub", channels: [ch] });
    const pub = new Peer("local-pub", { url: `${lonely.baseUrl}/cometd`, transport: "long-polling", cookie: "lonelypub", channels: [] });
    peers.push(sub, pub);
    await Promise.all([sub.start(), pub.start()]);
    await pub.publish(ch, { from: "local-pub", seq: 0 });
    await waitFor(() => sub.messages(ch).length === 1, { timeout: 5000, what: "local delivery without Redis" });
    await waitFor(() => countLines(lonely.output(), "redis unreachable at start") === 1, { timeout: 5000, what: "the log line" });
    assert.equal((await metrics(lonely)).bayeux_redis_connected, 0);
    const late = new Redis(port);
    extra.push(late);
    await late.start();
    const up = Date.now();
    await waitConnected([lonely], 15000);
    log(`the node joined ${Date.now() - up} ms after Redis started listening`);
    await sleep(500);
    assert.equal(countLines(lonely.output(), "redis unreachable"), 1, "logged once");
    await sub.stop();
    await pub.stop();
    await lonely.stop();
    await late.kill();
});

test("a node killed: its clients re-handshake through nginx on another node and receive the next messages", T, async () => {
    const ch = `/cluster/${uid()}/failover`;
    const victims = [peer("ws-sub@3", 2, "websocket", [ch]), peer("lp-sub@3", 2, "long-polling", [ch])];
    const control = peer("lp-sub@1", 0, "long-polling", [ch]);
    const pubs = [peer("pub@1", 0, "long-polling", []), peer("pub@2", 1, "websocket", [])];
    const subs = [...victims, control];
    await Promise.all([...subs, ...pubs].map((p) => p.start()));
    await warmUp(pubs, subs, ch);

    const killedAt = Date.now();
    nodes[2].proc.kill("SIGKILL");
    await nodes[2].exitPromise;
    await waitFor(() => victims.every((v) => v.handshakes >= 2 && v.subscribedAt === v.handshakes && v.connected), {
        timeout: 20000, interval: 20, what: "the victims re-handshaken and subscribed on another node",
        details: () => victims.map((v) => v.diagnostics()).join("\n") + "\n" + nginx.errorLog(),
    });
    const moved = Date.now() - killedAt;
    for (const v of victims) {
        const now = await nodeOfCookie(nginx, nodes.slice(0, 2).concat([{ port: -1 }]), v.cookie);
        assert.ok(now === 0 || now === 1, `${v.name} now routed to a live node (${now})`);
    }
    for (const s of subs) {
        s.received.length = 0;
    }
    await warmUp(pubs, subs, ch);
    const M = 50;
    await Promise.all(pubs.map(async (p) => {
        for (let k = 0; k < M; ++k) {
            await p.publish(ch, { from: p.name, seq: k });
        }
    }));
    await waitFor(() => subs.every((s) => s.messages(ch).length >= 2 * M), {
        timeout: 10000, what: "the next messages everywhere", details: () => subs.map((s) => s.diagnostics()).join("\n"),
    });
    await sleep(300);
    for (const s of subs) {
        for (const p of pubs) {
            assert.deepEqual(seqsFrom(s, ch, p), range(M), `${s.name} from ${p.name}`);
        }
    }
    log(`node killed: its clients were re-handshaken and subscribed on a live node ${moved} ms later`);
});
