// Cross-site reads of the credentialed Bayeux endpoints, in headless Chromium (issue 11).
//
// The browser holds agent1's credentials for the server: it logged in to the voice API (a 401
// challenge answered with Basic credentials, which Chromium caches, and the JSESSIONID session
// cookie the API sets). Then:
// - a foreign page (another 127.0.0.1 port, not an allowed origin; same site, as any other app on
//   the same host is) loads /api/v2/notifications and /cometd as <script> with a JSONP handshake:
//   the browser attaches the cookie and sends no Origin, and the server must refuse it (HTTP 403),
//   so the page's callback never sees a session;
// - the official CometD client on a page of the server's own origin (served through Playwright's
//   request routing, since the server serves no pages) and on a page of an allowed origin (CORS)
//   still handshakes with the cookie, subscribes to /v2/me/calls and receives a call
//   notification, over websocket and long-polling.
//
// Environment: as browser.test.mjs (BAYEUX_SKIP_BROWSER=1 skips, BAYEUX_CHROMIUM).

import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS, SKIP_BROWSER as SKIP, pageFile, startPageServer, stopPageServer } from "./lib/pages.mjs";
import { startServer } from "./lib/server.mjs";
import { show, waitFor, withTimeout } from "./lib/util.mjs";
import { AGENTS, CALLS_CHANNEL, NOTIFICATIONS_PATH, PASSWORD, deviceOf, restOk } from "./lib/voice.mjs";

const T = { timeout: 30000, skip: SKIP && "BAYEUX_SKIP_BROWSER=1" };

/** A free TCP port on 127.0.0.1 (the server's origin must be known to list it in its config). */
function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/** A Prometheus counter or gauge of the server's /metrics. */
async function metric(server, name) {
    const res = await withTimeout(fetch(`${server.baseUrl}/metrics`), 5000, "GET /metrics");
    const text = await res.text();
    const m = new RegExp(`^${name} (\\d+)$`, "m").exec(text);
    assert.ok(m, `${name} not in /metrics:\n${text}`);
    return Number(m[1]);
}

describe("credentialed endpoints refuse cross-site reads (headless chromium)", () => {
    let server;
    let evil;
    let good;
    let tmpDir;
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
            evil = await startPageServer();
            good = await startPageServer();
            tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "bayeux-xsite-"));
            // The voice API (and its notifications endpoint) allows its own origin and the good
            // page server's; the evil page server is another origin of the same site.
            const port = await freePort();
            const config = path.join(tmpDir, "server.toml");
            fs.writeFileSync(config, `[voice]\nallowed_origins = ["http://127.0.0.1:${port}", "http://127.0.0.1:${good.address().port}"]\n`);
            server = await startServer({ port, args: ["--config", config] });
            context = await chromium.launchPersistentContext(path.join(tmpDir, "profile"), {
                executablePath: CHROMIUM,
                headless: true,
                // A document fulfilled by request routing has no remote address, so Chromium's
                // local network access checks take it for a public page and block its WebSocket
                // to 127.0.0.1; the real page would come from 127.0.0.1 itself.
                args: [...CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"],
                timeout: 30000,
                // Answers the voice API's 401 challenge; Chromium then caches the credentials.
                httpCredentials: { username: AGENTS.agent1.user, password: PASSWORD, origin: server.baseUrl },
            });
            // The user logs in: a top-level visit of the API, authenticated by Basic credentials,
            // which also sets the session cookie.
            const page = await context.newPage();
            try {
                const res = await page.goto(`${server.baseUrl}/api/v2/me`, { timeout: 10000 });
                assert.equal(res.status(), 200, `login: ${await res.text()}`);
            } finally {
                await page.close();
            }
            const cookies = await context.cookies(server.baseUrl);
            assert.ok(cookies.some((c) => c.name === "JSESSIONID"), `no session cookie after login: ${show(cookies)}`);
        } catch (x) {
            setupError = x;
        }
    }, { timeout: 60000 });

    beforeEach(() => {
        if (setupError) {
            throw setupError;
        }
    });

    after(async () => {
        if (context) {
            await withTimeout(context.close(), 10000, "closing chromium").catch(() => {});
        }
        stopPageServer(evil);
        stopPageServer(good);
        if (server) {
            await server.stop();
        }
        if (tmpDir) {
            fs.rmSync(tmpDir, { recursive: true, force: true });
        }
    }, { timeout: 20000 });

    const details = (lines) => `console:\n${lines.slice(-30).join("\n")}\n--- server output (tail) ---\n${server.output().slice(-3000)}`;

    test("a foreign page's <script> JSONP handshake carries the user's cookie and gets HTTP 403, no session", T, async () => {
        const targets = [`${server.baseUrl}${NOTIFICATIONS_PATH}`, server.cometdUrl];
        const sessionsBefore = await metric(server, "bayeux_sessions");
        const refusedBefore = await metric(server, "bayeux_cross_site_refused_total");
        const page = await context.newPage();
        const lines = [];
        page.on("console", (msg) => lines.push(`[${msg.type()}] ${msg.text()}`));
        const seen = new Map();
        page.on("response", async (res) => {
            const url = res.url();
            const target = targets.find((t) => url.startsWith(`${t}/handshake?`));
            if (target) {
                seen.set(target, { status: res.status(), headers: await res.request().allHeaders() });
            }
        });
        try {
            await page.goto(`http://127.0.0.1:${evil.address().port}/attack.html?` + new URLSearchParams({ targets: JSON.stringify(targets) }),
                { timeout: 10000, waitUntil: "domcontentloaded" });
            const state = () => page.evaluate(() => window.__attack && JSON.parse(JSON.stringify(window.__attack)));
            const final = await waitFor(async () => {
                const s = await state();
                return s && targets.every((t) => s.results[t]?.done) && s;
            }, { timeout: 10000, interval: 50, what: "the script loads to finish", details: () => details(lines) });
            await waitFor(() => targets.every((t) => seen.has(t)), { timeout: 5000, what: "both responses", details: () => show([...seen.keys()]) });
            for (const target of targets) {
                const r = final.results[target];
                const { status, headers } = seen.get(target);
                // The refusal only means something if the browser did send the credentials.
                assert.match(headers.cookie ?? "", /JSESSIONID=/, `${target}: request headers ${show(headers)}`);
                assert.equal(headers["sec-fetch-dest"], "script", show(headers));
                assert.equal(headers.origin, undefined, "a script load sends no Origin");
                assert.equal(status, 403, `${target}: HTTP ${status}, page saw ${show(r)}`);
                assert.equal(r.replies, null, `${target}: the callback got ${show(r.replies)}`);
                assert.equal(r.error, true, `${target}: ${show(r)}`);
            }
            assert.equal(await metric(server, "bayeux_sessions"), sessionsBefore, "no session was created");
            assert.equal(await metric(server, "bayeux_cross_site_refused_total"), refusedBefore + targets.length);
        } catch (x) {
            x.message += "\n" + details(lines);
            throw x;
        } finally {
            await page.close().catch(() => {});
        }
    });

    /**
     * Runs the official client (browser/app.mjs) on a page of `pageOrigin` against the
     * notifications endpoint, subscribed to /v2/me/calls; returns the page once subscribed.
     */
    async function officialClient(page, pageOrigin, transport, lines) {
        page.on("console", (msg) => lines.push(`[${msg.type()}] ${msg.text()}`));
        page.on("pageerror", (err) => lines.push(`[pageerror] ${err.message}`));
        const url = `${pageOrigin}/index.html?` + new URLSearchParams({
            url: `${server.baseUrl}${NOTIFICATIONS_PATH}`,
            transport,
            channel: CALLS_CHANNEL,
        });
        await page.goto(url, { timeout: 10000, waitUntil: "domcontentloaded" });
        let last;
        const ready = await waitFor(async () => {
            last = await page.evaluate(() => window.__interop && JSON.parse(JSON.stringify(window.__interop)));
            return last && ["subscribed", "handshake-failed", "subscribe-failed", "error"].includes(last.phase) && last;
        }, { timeout: 12000, interval: 50, what: `the client to subscribe over ${transport}`, details: () => show(last) + "\n" + details(lines) });
        assert.equal(ready.phase, "subscribed", show(ready));
        assert.equal(ready.transport, transport);
        assert.deepEqual(ready.errors, []);
    }

    /** Dials from agent1's device and waits for the notification in the page. */
    async function receivesACall(page, lines) {
        const device = await deviceOf(server.baseUrl, AGENTS.agent1.user);
        await restOk(server.baseUrl, "POST", `/api/v2/me/devices/${device.id}/calls`, {
            user: AGENTS.agent1.user, body: { operationName: "Dial", destination: { phoneNumber: AGENTS.agent2.dn } },
        });
        const received = await waitFor(async () => {
            const r = await page.evaluate(() => window.__interop.received);
            return r.length > 0 && r;
        }, { timeout: 8000, interval: 50, what: "a call notification in the page", details: () => details(lines) });
        assert.equal(received[0].notificationType, "StatusChange", show(received[0]));
        assert.ok(received[0].call?.id, show(received[0]));
        const bye = await withTimeout(page.evaluate(() => window.__interop.disconnect()), 8000, "disconnect");
        assert.equal(bye.successful, true, show(bye));
    }

    for (const transport of ["websocket", "long-polling"]) {
        test(`the official client on a same-origin page (cookie) works over ${transport}`, T, async () => {
            const page = await context.newPage();
            const lines = [];
            // The server serves no pages: Chromium gets them from the page files, at the server's origin.
            await page.route((url) => url.origin === server.baseUrl && !url.pathname.startsWith("/api/") && pageFile(url.pathname) !== undefined,
                (route) => {
                    const [file, contentType] = pageFile(new URL(route.request().url()).pathname);
                    return route.fulfill({ path: file, contentType, headers: { "Cache-Control": "no-store" } });
                });
            try {
                await officialClient(page, server.baseUrl, transport, lines);
                await receivesACall(page, lines);
            } catch (x) {
                x.message += "\n" + details(lines);
                throw x;
            } finally {
                await page.close().catch(() => {});
            }
        });

        test(`the official client on an allowed-origin page (CORS, cookie) works over ${transport}`, T, async () => {
            const page = await context.newPage();
            const lines = [];
            try {
                await officialClient(page, `http://127.0.0.1:${good.address().port}`, transport, lines);
                await receivesACall(page, lines);
            } catch (x) {
                x.message += "\n" + details(lines);
                throw x;
            } finally {
                await page.close().catch(() => {});
            }
        });
    }
});
