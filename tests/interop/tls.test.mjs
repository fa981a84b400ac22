// HTTPS interop: the official CometD JavaScript client in headless Chromium against
// bayeux-server serving TLS itself (--tls-cert/--tls-key) with a certificate of a test CA made
// here with openssl. Checks, from the browser's own network log (the DevTools protocol), that
// long-polling runs over HTTP/2 (ALPN h2) and that WebSocket upgrades over HTTP/1.1 (101).
//
// Chromium is told to accept the test certificate by its public key
// (--ignore-certificate-errors-spki-list), which needs no root access to a trust store.
//
// Environment: BAYEUX_SERVER_BIN (required), BAYEUX_SKIP_BROWSER=1 skips these tests,
// BAYEUX_CHROMIUM overrides the browser path. Needs the openssl command.

import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS, SKIP_BROWSER as SKIP, startPageServer, stopPageServer } from "./lib/pages.mjs";
import { serverBin } from "./lib/server.mjs";
import { show, sleep, uid, waitFor, withTimeout } from "./lib/util.mjs";

const LISTENING_RE = /listening on https:\/\/127\.0\.0\.1:(\d+)/;

/** A test CA and a server certificate for 127.0.0.1 and localhost it signs, in `dir`. */
function makeCertificates(dir) {
    const run = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bayeux interop test CA");
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
    fs.writeFileSync(path.join(dir, "ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n");
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf");
    // Chromium's SPKI pin: base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo.
    const spki = execFileSync("sh", ["-c",
        "openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"],
    { cwd: dir }).toString().trim();
    return { cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem"), spki };
}

/** Starts the server over TLS; resolves with { proc, port, output() }. */
function startTlsServer(certs, extraArgs = []) {
    const proc = spawn(serverBin(), ["--listen", "127.0.0.1:0", "--tls-cert", certs.cert, "--tls-key", certs.key, ...extraArgs],
        { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    const append = (chunk) => {
        log = (log + chunk).slice(-32768);
    };
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", append);
    proc.stdout.setEncoding("utf8");
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            proc.kill("SIGKILL");
            reject(new Error(`server did not listen on https within 10 s\n${log}`));
        }, 10000);
        proc.stdout.on("data", (chunk) => {
            append(chunk);
            const m = LISTENING_RE.exec(log);
            if (m) {
                clearTimeout(timer);
                resolve({ proc, port: Number(m[1]), output: () => log });
            }
        });
        proc.once("exit", (code) => {
            clearTimeout(timer);
            reject(new Error(`server exited (${code}) before listening\n${log}`));
        });
    });
}

async function stopServer(server) {
    if (!server || server.proc.exitCode !== null) {
        return;
    }
    const exited = new Promise((resolve) => server.proc.once("exit", resolve));
    server.proc.kill("SIGTERM");
    if (!(await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]))) {
        server.proc.kill("SIGKILL");
        await Promise.race([exited, sleep(3000)]);
    }
}

describe("cometd js client in headless chromium over https", () => {
    let dir;
    let server;
    let pages;
    let context;
    let setupError;

    before(async () => {
        if (SKIP) {
            return;
        }
        try {
            if (!fs.existsSync(CHROMIUM)) {
                throw new Error(`${CHROMIUM} not found: run scripts/install-test-deps.sh (or set BAYEUX_SKIP_BROWSER=1 to skip browser tests)`);
            }
            dir = fs.mkdtempSync(path.join(os.tmpdir(), "bayeux-tls-"));
            const certs = makeCertificates(dir);
            // The anonymous endpoint: this test is about the transport, not the voice API.
            server = await startTlsServer(certs, ["--no-voice"]);
            pages = await startPageServer();
            context = await chromium.launchPersistentContext(path.join(dir, "profile"), {
                executablePath: CHROMIUM,
                headless: true,
                args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${certs.spki}`],
                timeout: 30000,
            });
        } catch (x) {
            setupError = x;
        }
    }, { timeout: 45000 });

    beforeEach(() => {
        if (setupError) {
            throw setupError;
        }
    });

    after(async () => {
        if (context) {
            await withTimeout(context.close(), 10000, "closing chromium").catch(() => {});
        }
        stopPageServer(pages);
        await stopServer(server);
        if (dir) {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    }, { timeout: 20000 });

    const EXPECTED = { "long-polling": "h2", websocket: "http/1.1" };
    for (const transport of Object.keys(EXPECTED)) {
        test(`${transport} over https: subscribe, publish, receive; protocol ${EXPECTED[transport]}`, { timeout: 30000, skip: SKIP && "BAYEUX_SKIP_BROWSER=1" }, async () => {
            const cometdUrl = `https://127.0.0.1:${server.port}/cometd`;
            const channel = `/it/tls/${transport}/${uid()}`;
            const page = await context.newPage();
            const consoleLines = [];
            page.on("console", (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
            // The browser's network log: the protocol of every response from the Bayeux server,
            // and the status of WebSocket handshakes.
            const cdp = await context.newCDPSession(page);
            await cdp.send("Network.enable");
            const protocols = [];
            const wsStatuses = [];
            cdp.on("Network.responseReceived", (e) => {
                if (e.response.url.startsWith(cometdUrl)) {
                    protocols.push(e.response.protocol);
                }
            });
            cdp.on("Network.webSocketHandshakeResponseReceived", (e) => wsStatuses.push(e.response.status));
            const state = () => page.evaluate(() => {
                const s = window.__interop;
                return s ? JSON.parse(JSON.stringify(s)) : null;
            });
            const details = async () => `page state: ${show(await state().catch((x) => String(x)))}\nprotocols: ${show(protocols)}\n` +
                `ws statuses: ${show(wsStatuses)}\nconsole:\n${consoleLines.slice(-30).join("\n")}\n--- server output ---\n${server.output().slice(-3000)}`;
            try {
                const pageUrl = `http://127.0.0.1:${pages.address().port}/?` + new URLSearchParams({ url: cometdUrl, transport, channel });
                await page.goto(pageUrl, { timeout: 10000, waitUntil: "domcontentloaded" });
                let last;
                const ready = await waitFor(async () => {
                    last = await state();
                    return last && ["subscribed", "handshake-failed", "subscribe-failed", "error"].includes(last.phase) && last;
                }, { timeout: 15000, interval: 50, what: `browser client to subscribe over ${transport}`, details: () => show(last) + "\n" + consoleLines.join("\n") });
                assert.equal(ready.phase, "subscribed");
                assert.equal(ready.transport, transport);

                const replies = await withTimeout(page.evaluate(() => window.__interop.publish("browser", 3)), 10000, "browser publishes");
                assert.ok(replies.every((r) => r.successful), show(replies));
                await waitFor(async () => (await state()).received.length >= 3, { timeout: 10000, interval: 50, what: "3 messages in the browser" });
                assert.deepEqual((await state()).received, [0, 1, 2].map((n) => ({ from: "browser", n })));

                if (transport === "long-polling") {
                    // Every response of the Bayeux server came over HTTP/2 (CORS preflights included).
                    assert.ok(protocols.length >= 4, show(protocols));
                    assert.deepEqual([...new Set(protocols)], ["h2"], show(protocols));
                } else {
                    // The upgrade is an HTTP/1.1 101 on a connection of its own (no RFC 8441).
                    assert.deepEqual(wsStatuses, [101]);
                }
                const bye = await withTimeout(page.evaluate(() => window.__interop.disconnect()), 8000, "browser disconnect");
                assert.equal(bye.successful, true, show(bye));
                assert.deepEqual((await state()).errors, []);
            } catch (x) {
                x.message += "\n" + await details().catch(() => "");
                throw x;
            } finally {
                await page.close().catch(() => {});
            }
        });
    }
});
