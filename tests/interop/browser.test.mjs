// Interop tests: the official CometD JavaScript client running in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core; no browser is ever downloaded) against the
// bayeux-server binary named by BAYEUX_SERVER_BIN.
//
// The page comes from a small static HTTP server on 127.0.0.1 (another port than the Bayeux
// server), so every Bayeux request is cross-origin: long-polling needs CORS with credentials,
// callback-polling uses <script> (JSONP), websocket sends an Origin header.
//
// The server's /cometd carries the voice authenticator, and callback-polling is off on
// credentialed endpoints (a <script> load is how a foreign page reads them; see xsite.test.mjs),
// so callback-polling runs against a second server whose /cometd is anonymous (voice disabled).
//
// Environment: BAYEUX_SKIP_BROWSER=1 skips these tests; otherwise a missing Chromium is a failure.
// BAYEUX_CHROMIUM overrides the browser path (default /usr/bin/chromium).

import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { TestClient } from "./lib/cometd-node.mjs";
import { CHROMIUM, CHROMIUM_ARGS, SKIP_BROWSER as SKIP, startPageServer, stopPageServer } from "./lib/pages.mjs";
import { startServer } from "./lib/server.mjs";
import { show, uid, waitFor, withTimeout } from "./lib/util.mjs";

// callback-polling (JSONP) can only run in a browser, so it is covered here too.
const BROWSER_TRANSPORTS = ["websocket", "long-polling", "callback-polling"];

describe("cometd js client in headless chromium", () => {
    let voiceServer;
    let anonServer;
    let pages;
    let userDataDir;
    let context;
    let setupError;

    // A setup failure (no Chromium, server not starting...) fails every test rather than cancelling them.
    before(async () => {
        if (SKIP) {
            return;
        }
        try {
            if (!fs.existsSync(CHROMIUM)) {
                throw new Error(`${CHROMIUM} not found: run scripts/install-test-deps.sh (or set BAYEUX_SKIP_BROWSER=1 to skip browser tests)`);
            }
            voiceServer = await startServer();
            userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "bayeux-chromium-"));
            const anonConfig = `${userDataDir}-anon.toml`;
            fs.writeFileSync(anonConfig, "voice_enabled = false\n");
            try {
                anonServer = await startServer({ args: ["--config", anonConfig] });
            } finally {
                fs.rmSync(anonConfig, { force: true });
            }
            pages = await startPageServer();
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
        if (voiceServer) {
            await voiceServer.stop();
        }
        if (anonServer) {
            await anonServer.stop();
        }
        if (userDataDir) {
            fs.rmSync(userDataDir, { recursive: true, force: true });
        }
    }, { timeout: 20000 });

    for (const transport of BROWSER_TRANSPORTS) {
        test(`subscribe, publish and receive over ${transport} (cross-origin page)`, { timeout: 20000, skip: SKIP && "BAYEUX_SKIP_BROWSER=1" }, async (t) => {
            const channel = `/it/browser/${transport}/${uid()}`;
            const server = transport === "callback-polling" ? anonServer : voiceServer;
            const page = await context.newPage();
            const consoleLines = [];
            page.on("console", (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
            page.on("pageerror", (err) => consoleLines.push(`[pageerror] ${err.message}`));
            const pageUrl = `http://127.0.0.1:${pages.address().port}/?` + new URLSearchParams({
                url: server.cometdUrl,
                transport,
                channel,
            });
            const state = () => page.evaluate(() => {
                const s = window.__interop;
                return s ? JSON.parse(JSON.stringify(s)) : null;
            });
            const details = async () => `page state: ${show(await state().catch((x) => String(x)))}\n` +
                `console:\n${consoleLines.slice(-30).join("\n")}\n--- server output (tail) ---\n${server.output().slice(-3000)}`;
            const peerTransport = transport === "callback-polling" ? "long-polling" : transport;
            const peer = new TestClient(server.cometdUrl, peerTransport);
            try {
                // Not "load": a held callback-polling /meta/connect is a <script> that would delay the load event.
                await page.goto(pageUrl, { timeout: 10000, waitUntil: "domcontentloaded" });
                let last;
                const ready = await waitFor(async () => {
                    last = await state();
                    return last && ["subscribed", "handshake-failed", "subscribe-failed", "error"].includes(last.phase) && last;
                }, { timeout: 12000, interval: 50, what: `browser client to subscribe over ${transport}`, details: () => show(last) + "\n" + consoleLines.join("\n") });
                assert.equal(ready.phase, "subscribed", "browser client phase");
                assert.equal(ready.transport, transport);
                assert.match(ready.clientId, /^[A-Za-z0-9]+$/);
                assert.equal(ready.subscribe.subscription, channel);
                assert.deepEqual(ready.errors, []);

                await peer.handshake();
                await peer.subscribe(channel);

                // Browser -> everyone (including itself), then Node -> everyone.
                const replies = await withTimeout(page.evaluate(() => window.__interop.publish("browser", 3)), 10000, "browser publishes");
                assert.ok(replies.every((r) => r.successful), show(replies));
                for (let n = 0; n < 3; ++n) {
                    await peer.publish(channel, { from: "node", n });
                }
                const expected = [0, 1, 2].map((n) => ({ from: "browser", n })).concat([0, 1, 2].map((n) => ({ from: "node", n })));
                await waitFor(async () => (await state()).received.length >= 6, { timeout: 10000, interval: 50, what: "6 messages in the browser", details: () => consoleLines.join("\n") });
                await waitFor(() => peer.messages(channel).length >= 6, { timeout: 10000, what: "6 messages in node", details: () => peer.diagnostics() });
                const final = await state();
                assert.deepEqual(final.received, expected, "messages received by the browser");
                assert.deepEqual(peer.messages(channel).map((m) => m.data), expected);

                const cookies = await context.cookies(server.baseUrl);
                t.diagnostic(`cookies for ${server.baseUrl}: ${show(cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path })))}`);

                const bye = await withTimeout(page.evaluate(() => window.__interop.disconnect()), 8000, "browser disconnect");
                assert.equal(bye.successful, true, show(bye));
                const errors = (await state()).errors;
                assert.deepEqual(errors, [], "page errors");
            } catch (x) {
                x.message += "\n" + await details().catch(() => "");
                throw x;
            } finally {
                await peer.disconnect(3000);
                await page.close().catch(() => {});
            }
        });
    }
});
