// The cluster under test: one redis-server, three bayeux-server nodes joined by it, nginx in front
// (tests/cluster/nginx.conf.template), all on loopback ports, each started as a child process and
// killed by PID. Reuses tests/interop's server launcher and node_modules.
//
// Environment: BAYEUX_SERVER_BIN (required); REDIS_SERVER, REDIS_CLI, NGINX (binaries, default
// from PATH and /usr/sbin); BAYEUX_SERVER_LOG=1 echoes node output.

import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../../interop/lib/server.mjs";
import { sleep, waitFor } from "../../interop/lib/util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
export const TEMPLATE = path.join(here, "..", "nginx.conf.template");

const children = new Set();
process.on("exit", () => {
    for (const c of children) {
        try {
            c.kill("SIGKILL");
        } catch {
            // gone
        }
    }
});

function which(name, fallbacks = []) {
    for (const dir of (process.env.PATH || "").split(":").concat(fallbacks)) {
        const p = path.join(dir, name);
        try {
            fs.accessSync(p, fs.constants.X_OK);
            return p;
        } catch {
            // next
        }
    }
    throw new Error(`${name} not found: run scripts/cluster-deps.sh`);
}

export async function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

async function waitForPort(port, timeout = 10000, proc) {
    const deadline = Date.now() + timeout;
    for (;;) {
        const ok = await new Promise((resolve) => {
            const sock = net.connect(port, "127.0.0.1");
            sock.once("connect", () => {
                sock.destroy();
                resolve(true);
            });
            sock.once("error", () => resolve(false));
        });
        if (ok) {
            return;
        }
        if (proc && proc.exitCode !== null) {
            throw new Error(`process exited (code ${proc.exitCode}) before listening on ${port}`);
        }
        if (Date.now() > deadline) {
            throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeout} ms`);
        }
        await sleep(20);
    }
}

function track(proc, tag) {
    children.add(proc);
    proc.log = "";
    const append = (chunk) => {
        proc.log = (proc.log + chunk).slice(-32 * 1024);
        if (process.env.BAYEUX_SERVER_LOG === "1") {
            process.stderr.write(`[${tag}] ${chunk}`);
        }
    };
    proc.stdout?.setEncoding("utf8");
    proc.stderr?.setEncoding("utf8");
    proc.stdout?.on("data", append);
    proc.stderr?.on("data", append);
    proc.exited = new Promise((resolve) => proc.once("exit", () => {
        children.delete(proc);
        resolve();
    }));
    return proc;
}

async function killProc(proc, signal = "SIGKILL") {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
        return;
    }
    try {
        proc.kill(signal);
    } catch {
        return;
    }
    await Promise.race([proc.exited, sleep(5000)]);
}

/** A redis-server on a fixed loopback port; `kill()` and `start()` again restart it there. */
export class Redis {
    constructor(port) {
        this.port = port;
        this.proc = null;
        this.bin = process.env.REDIS_SERVER || which("redis-server", ["/usr/bin", "/usr/sbin"]);
        this.cli = process.env.REDIS_CLI || which("redis-cli", ["/usr/bin"]);
    }

    get url() {
        return `redis://127.0.0.1:${this.port}`;
    }

    async start() {
        const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--loglevel", "warning"];
        this.proc = track(spawn(this.bin, args, { stdio: ["ignore", "pipe", "pipe"] }), `redis ${this.port}`);
        await waitForPort(this.port, 10000, this.proc);
    }

    async kill(signal = "SIGKILL") {
        await killProc(this.proc, signal);
        this.proc = null;
    }

    signal(sig) {
        this.proc.kill(sig);
    }

    /** Runs redis-cli against this server; resolves with its trimmed stdout. */
    cliRun(...args) {
        const r = spawnSync(this.cli, ["-h", "127.0.0.1", "-p", String(this.port), ...args], { encoding: "utf8", timeout: 5000 });
        if (r.status !== 0) {
            throw new Error(`redis-cli ${args.join(" ")}: ${r.stderr || r.error}`);
        }
        return r.stdout.trim();
    }

    /** PUBSUB NUMSUB for each channel: { channel: count }. */
    numsub(...channels) {
        const lines = this.cliRun("PUBSUB", "NUMSUB", ...channels).split("\n");
        const out = {};
        for (let i = 0; i + 1 < lines.length; i += 2) {
            out[lines[i]] = Number(lines[i + 1]);
        }
        return out;
    }
}

/** Starts one bayeux-server node joined to `redisUrl` (port chosen by the node). */
export async function startNode(redisUrl, extra = []) {
    return startServer({ args: ["--redis", redisUrl, ...extra] });
}

/** nginx from the template, in front of `nodes`, listening on a loopback port. */
export class Nginx {
    constructor(nodes) {
        this.nodes = nodes;
        this.bin = process.env.NGINX || which("nginx", ["/usr/sbin"]);
    }

    async start() {
        this.port = await freePort();
        this.prefix = fs.mkdtempSync(path.join(os.tmpdir(), "bayeux-cluster-nginx-"));
        // Workers may run as another user when started as root: let them use the temp paths.
        fs.chmodSync(this.prefix, 0o777);
        const conf = fs.readFileSync(TEMPLATE, "utf8")
            .replaceAll("@PREFIX@", this.prefix)
            .replaceAll("@LISTEN@", `127.0.0.1:${this.port}`)
            .replaceAll("@NODE1@", `127.0.0.1:${this.nodes[0].port}`)
            .replaceAll("@NODE2@", `127.0.0.1:${this.nodes[1].port}`)
            .replaceAll("@NODE3@", `127.0.0.1:${this.nodes[2].port}`);
        this.conf = path.join(this.prefix, "nginx.conf");
        fs.writeFileSync(this.conf, conf);
        this.proc = track(spawn(this.bin, ["-p", this.prefix, "-c", this.conf], { stdio: ["ignore", "pipe", "pipe"] }), "nginx");
        try {
            await waitForPort(this.port, 10000, this.proc);
        } catch (e) {
            throw new Error(`${e.message}\n${this.proc.log}\n${this.errorLog()}`);
        }
    }

    errorLog() {
        try {
            return fs.readFileSync(path.join(this.prefix, "error.log"), "utf8").slice(-4000);
        } catch {
            return "";
        }
    }

    get baseUrl() {
        return `http://127.0.0.1:${this.port}`;
    }

    async stop() {
        await killProc(this.proc, "SIGTERM");
        await killProc(this.proc, "SIGKILL");
        if (this.prefix) {
            fs.rmSync(this.prefix, { recursive: true, force: true });
        }
    }
}

/** The node (index into `nodes`) that nginx routes the BAYEUX_BROWSER value `cookie` to. */
export async function nodeOfCookie(nginx, nodes, cookie) {
    const res = await fetch(`${nginx.baseUrl}/healthz`, { headers: { Cookie: `BAYEUX_BROWSER=${cookie}` } });
    await res.text();
    const upstream = res.headers.get("x-bayeux-node") || "";
    const port = Number(upstream.split(",").pop().trim().split(":").pop());
    return nodes.findIndex((n) => n.port === port);
}

/**
 * `count` distinct BAYEUX_BROWSER values per node that nginx routes to that node:
 * `cookies[i]` is the list for node i.
 */
export async function placeCookies(nginx, nodes, count, tag) {
    const cookies = nodes.map(() => []);
    for (let k = 0; k < 2000 && cookies.some((l) => l.length < count); ++k) {
        const cookie = `${tag}${k}`;
        const i = await nodeOfCookie(nginx, nodes, cookie);
        if (i >= 0 && cookies[i].length < count) {
            cookies[i].push(cookie);
        }
    }
    if (cookies.some((l) => l.length < count)) {
        throw new Error(`could not find ${count} cookies per node: ${JSON.stringify(cookies)}`);
    }
    return cookies;
}

/** A node's /metrics as { name or name{labels}: number }. */
export async function metrics(node) {
    const res = await fetch(`${node.baseUrl}/metrics`);
    const text = await res.text();
    const out = {};
    for (const line of text.split("\n")) {
        if (!line || line.startsWith("#")) {
            continue;
        }
        const i = line.lastIndexOf(" ");
        out[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return out;
}

export function dropped(m) {
    return (m['bayeux_redis_publish_dropped_total{reason="queue_full"}'] || 0) +
        (m['bayeux_redis_publish_dropped_total{reason="unavailable"}'] || 0);
}

/** Waits until every node reports a Redis connection. */
export async function waitConnected(nodes, timeout = 15000) {
    await waitFor(async () => {
        const all = await Promise.all(nodes.map(metrics));
        return all.every((m) => m.bayeux_redis_connected === 1);
    }, { timeout, interval: 100, what: "every node connected to Redis" });
}

export { killProc, track };
