// Interop tests of remote calls: the official CometD JavaScript client's `remoteCall()`, in Node
// (websocket, long-polling) and in headless Chromium (websocket, long-polling, callback-polling),
// against the `remote_calls` example of bayeux-transport (`/service/echo`, `/service/fail`,
// `/service/slow`, which the server times out after 2 s).
//
// The example binary is `examples/remote_calls` beside BAYEUX_SERVER_BIN (cargo puts both in
// target/<profile>/), or BAYEUX_REMOTE_CALLS_BIN. Build it with
// `cargo build -p bayeux-transport --example remote_calls`.
//
// Run: BAYEUX_SERVER_BIN=target/debug/bayeux-server node --test tests/interop/remote_calls.test.mjs

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { ClientPool, TRANSPORTS } from "./lib/cometd-node.mjs";
import { CHROMIUM, CHROMIUM_ARGS, SKIP_BROWSER, startPageServer, stopPageServer } from "./lib/pages.mjs";
import { serverBin } from "./lib/server.mjs";
import { show, sleep, withTimeout } from "./lib/util.mjs";

const LISTENING_RE = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
// The example's timeout of /service/slow, and the sweep period that drives it.
const SERVER_TIMEOUT_MS = 2000;
const SWEEP_MS = 1000;
// The client-side timeout of each call: well above the server's, so a timeout the test sees is
// the server's answer, not the client giving up.
const CLIENT_TIMEOUT_MS = 8000;

function exampleBin() {
    const bin = process.env.BAYEUX_REMOTE_CALLS_BIN ||
        path.join(path.dirname(serverBin()), "examples", "remote_calls");
    if (!fs.existsSync(bin)) {
        throw new Error(`${bin} not found: build it with 'cargo build -p bayeux-transport --example remote_calls'`);
    }
    return bin;
}

/** Starts the example on an ephemeral port; resolves with { proc, url, output(), stop() }. */
function startExample() {
    const proc = spawn(exampleBin(), ["127.0.0.1:0"], { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    const server = {
        proc,
        url: undefined,
        output: () => log.slice(-4000),
        async stop() {
            if (proc.exitCode !== null || proc.signalCode !== null) {
                return;
            }
            proc.kill("SIGTERM");
            const done = await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]);
            if (!done) {
                proc.kill("SIGKILL");
                await Promise.race([exited, sleep(3000)]);
            }
        },
    };
    process.once("exit", () => proc.kill("SIGKILL"));
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            server.stop();
            reject(new Error(`remote_calls example did not start within 10 s\n${log}`));
        }, 10000);
        proc.stdout.setEncoding("utf8");
        proc.stderr.setEncoding("utf8");
        proc.stderr.on("data", (chunk) => {
            log += chunk;
        });
        proc.stdout.on("data", (chunk) => {
            log += chunk;
            const m = LISTENING_RE.exec(log);
            if (m && !server.url) {
                clearTimeout(timer);
                server.url = `http://127.0.0.1:${m[1]}/cometd`;
                resolve(server);
            }
        });
        exited.then((code) => {
            clearTimeout(timer);
            reject(new Error(`remote_calls example exited (${code}) before listening\n${log}`));
        });
    });
}

/**
 * The checks made on the replies of the four calls, wherever the client ran: `replies` holds
 * { echo, fail, quick, slow, slowMs } (each reply a JSON copy of what the callback received).
 */
function checkReplies(replies, where) {
    const what = `${where}: ${show(replies)}`;
    assert.equal(replies.echo.successful, true, what);
    assert.equal(replies.echo.channel, "/service/echo", what);
    assert.deepEqual(replies.echo.data, { text: "héllo", n: [1, 2, 3] }, what);

    assert.equal(replies.fail.successful, false, what);
    assert.equal(replies.fail.channel, "/service/fail", what);
    assert.deepEqual(replies.fail.data, { reason: "asked to fail" }, what);

    // Answered later from a server task, within the timeout.
    assert.equal(replies.quick.successful, true, what);
    assert.deepEqual(replies.quick.data, { delayMs: 200 }, what);

    // Never answered in time: the server's timeout, not the client's (406::timeout).
    assert.equal(replies.slow.successful, false, what);
    assert.equal(replies.slow.error, "408::remote_call_timeout", what);
    assert.ok(replies.slowMs >= SERVER_TIMEOUT_MS - 50, `timed out after ${replies.slowMs} ms, before the server timeout: ${what}`);
    assert.ok(replies.slowMs < SERVER_TIMEOUT_MS + 2 * SWEEP_MS + 1500, `timed out after ${replies.slowMs} ms: ${what}`);
}

/**
 * Makes the four calls on a handshaken `cometd` and resolves with their replies. The same source
 * runs in Node and (through page.evaluate) in the browser, so it is self-contained.
 */
async function makeCalls(cometd, clientTimeout) {
    const call = (target, data) => new Promise((resolve) => {
        const started = Date.now();
        cometd.remoteCall(target, data, clientTimeout, (reply) => {
            resolve({ reply: JSON.parse(JSON.stringify({
                channel: reply.channel, id: reply.id, successful: reply.successful,
                data: reply.data, error: reply.error,
            })), ms: Date.now() - started });
        });
    });
    const [echo, fail, quick, slow] = await Promise.all([
        call("echo", { text: "héllo", n: [1, 2, 3] }),
        call("/fail", { reason: "asked to fail" }),
        call("slow", { delayMs: 200 }),
        call("slow", { delayMs: 30000 }),
    ]);
    return { echo: echo.reply, fail: fail.reply, quick: quick.reply, slow: slow.reply, slowMs: slow.ms };
}

describe("remoteCall() of the CometD JS client against the remote_calls example", () => {
    let server;

    before(async () => {
        server = await startExample();
    }, { timeout: 15000 });

    after(async () => {
        if (server) {
            await server.stop();
        }
    }, { timeout: 10000 });

    for (const transport of TRANSPORTS) {
        test(`node: success, failure, late answer and server timeout over ${transport}`, { timeout: 20000 }, async () => {
            const pool = new ClientPool();
            try {
                const client = await pool.connect(server.url, transport);
                const replies = await withTimeout(makeCalls(client.cometd, CLIENT_TIMEOUT_MS), 15000,
                    `remote calls over ${transport}\n${client.diagnostics()}`);
                checkReplies(replies, `node ${transport}`);
                // Each answer reached the caller once, with its request's id.
                const ids = client.incoming.filter((m) => m.channel.startsWith("/service/") && ("data" in m || m.error))
                    .map((m) => m.id);
                assert.equal(new Set(ids).size, ids.length, `one answer per call: ${show(client.incoming)}`);
                assert.equal(ids.length, 4, show(client.incoming));
            } catch (x) {
                x.message += `\n--- server output ---\n${server.output()}`;
                throw x;
            } finally {
                await pool.closeAll();
            }
        });
    }

    describe("in headless chromium", () => {
        let pages;
        let userDataDir;
        let context;
        let setupError;

        before(async () => {
            if (SKIP_BROWSER) {
                return;
            }
            try {
                if (!fs.existsSync(CHROMIUM)) {
                    throw new Error(`${CHROMIUM} not found: run scripts/install-test-deps.sh (or set BAYEUX_SKIP_BROWSER=1)`);
                }
                pages = await startPageServer();
                userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "bayeux-chromium-rc-"));
                context = await chromium.launchPersistentContext(userDataDir, {
                    executablePath: CHROMIUM,
                    headless: true,
                    args: CHROMIUM_ARGS,
                    timeout: 30000,
                });
            } catch (x) {
                setupError = x;
            }
        }, { timeout: 45000 });

        after(async () => {
            if (context) {
                await withTimeout(context.close(), 10000, "closing chromium").catch(() => {});
            }
            stopPageServer(pages);
            if (userDataDir) {
                fs.rmSync(userDataDir, { recursive: true, force: true });
            }
        }, { timeout: 20000 });

        for (const transport of ["websocket", "long-polling", "callback-polling"]) {
            test(`browser: success, failure, late answer and server timeout over ${transport}`, { timeout: 30000, skip: SKIP_BROWSER && "BAYEUX_SKIP_BROWSER=1" }, async () => {
                if (setupError) {
                    throw setupError;
                }
                const page = await context.newPage();
                const consoleLines = [];
                page.on("console", (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
                page.on("pageerror", (err) => consoleLines.push(`[pageerror] ${err.message}`));
                try {
                    // A page of another origin (the page server), so every Bayeux request is cross-origin.
                    await page.goto(`http://127.0.0.1:${pages.address().port}/blank.html`, { timeout: 10000 });
                    const replies = await withTimeout(page.evaluate(async ({ url, transport, clientTimeout, callsSource }) => {
                        const { CometD } = await import("/cometd/cometd.js");
                        const cometd = new CometD();
                        for (const type of cometd.getTransportTypes()) {
                            if (type !== transport) {
                                cometd.unregisterTransport(type);
                            }
                        }
                        cometd.configure({ url, logLevel: "warn" });
                        const hs = await new Promise((resolve) => cometd.handshake(resolve));
                        if (!hs.successful) {
                            throw new Error("handshake failed: " + JSON.stringify(hs.error || hs.failure && hs.failure.reason));
                        }
                        const used = cometd.getTransport().type;
                        // eslint-disable-next-line no-new-func
                        const makeCalls = new Function(`return (${callsSource});`)();
                        const out = await makeCalls(cometd, clientTimeout);
                        await new Promise((resolve) => cometd.disconnect(resolve));
                        return { ...out, used };
                    }, { url: server.url, transport, clientTimeout: CLIENT_TIMEOUT_MS, callsSource: makeCalls.toString() }),
                    20000, `remote calls in the browser over ${transport}`);
                    assert.equal(replies.used, transport);
                    checkReplies(replies, `browser ${transport}`);
                } catch (x) {
                    x.message += `\nconsole:\n${consoleLines.slice(-30).join("\n")}\n--- server output ---\n${server.output()}`;
                    throw x;
                } finally {
                    await page.close().catch(() => {});
                }
            });
        }
    });
});
