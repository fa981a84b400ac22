// The agent page served by the server (/voice/, the official CometD client served with it under
// /voice/cometd/) in headless Chromium (/usr/bin/chromium driven by playwright-core): three agents
// log in, each in its own browser context (its own cookies), once per transport; agent1 calls
// agent2, agent2 answers, agent1 records, consults agent3 and completes the transfer; each page
// shows its own calls and agent state, updated live from /v2/me/calls and /v2/me/devices.
//
// Environment: BAYEUX_SKIP_BROWSER=1 skips these tests; BAYEUX_CHROMIUM overrides the browser.

import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS, SKIP_BROWSER as SKIP } from "./lib/pages.mjs";
import { startServer } from "./lib/server.mjs";
import { withTimeout } from "./lib/util.mjs";

const T = { timeout: 60000 };
/** How long the page may take to show a change. */
const SHOW_MS = 8000;

describe("the agent page in headless chromium", () => {
    let server;
    let browser;
    let setupError;

    before(async () => {
        if (SKIP) {
            return;
        }
        try {
            if (!fs.existsSync(CHROMIUM)) {
                throw new Error(`${CHROMIUM} not found: run scripts/install-test-deps.sh (or set BAYEUX_SKIP_BROWSER=1)`);
            }
            server = await startServer();
            browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
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
        if (browser) {
            await withTimeout(browser.close(), 10000, "closing chromium").catch(() => {});
        }
        if (server) {
            await server.stop();
        }
    }, { timeout: 20000 });

    /** A logged-in agent page in a context of its own. */
    async function agentPage(user, transport) {
        const context = await browser.newContext();
        const page = await context.newPage();
        const errors = [];
        page.on("pageerror", (e) => errors.push(String(e)));
        await page.goto(`${server.baseUrl}/voice/`);
        await page.fill("#user", user);
        await page.fill("#password", "password");
        await page.selectOption("#transport", transport);
        await page.click("#login-button");
        await page.waitForSelector("body[data-ready=true]", { timeout: SHOW_MS });
        const status = await page.textContent("#status");
        assert.equal(status, `connected (${transport})`, `${user}: ${status}; ${errors}`);
        return { user, page, context, errors };
    }

    /** Waits until the agent's page shows call rows matching `rows` (state and participants). */
    async function shows(agent, rows, what) {
        const got = () => agent.page.$$eval("#calls tr", (trs) => trs.map((tr) => `${tr.dataset.state} [${tr.dataset.participants}] ${tr.dataset.recording}`));
        const want = rows.map((r) => `${r.state} [${r.with}] ${r.recording ?? ""}`.trimEnd());
        const deadline = Date.now() + SHOW_MS;
        let last;
        while (Date.now() < deadline) {
            last = (await got()).map((s) => s.trimEnd());
            if (JSON.stringify(last) === JSON.stringify(want)) {
                return;
            }
            await new Promise((r) => setTimeout(r, 50));
        }
        assert.deepEqual(last, want, `${agent.user}'s page: ${what}; errors ${agent.errors}; page error: ${await agent.page.textContent("#error")}`);
    }

    /** Clicks the operation button `op` in the agent's call row whose state is `state`. */
    async function click(agent, state, op, parameter) {
        const row = agent.page.locator(`#calls tr[data-state=${state}]`);
        if (parameter !== undefined) {
            await row.locator("input.parameter").fill(parameter);
        }
        await row.locator(`button[data-op=${op}]`).click({ timeout: SHOW_MS });
    }

    for (const transport of ["websocket", "long-polling"]) {
        test(`${transport}: two agents on a call, a recording, a transfer to a third`, T, async () => {
            if (SKIP) {
                return;
            }
            const a = await agentPage("agent1", transport);
            const b = await agentPage("agent2", transport);
            const c = await agentPage("agent3", transport);
            try {
                // Agent state, live from /v2/me/devices.
                await a.page.fill("#reason", "Coffee");
                await a.page.click("button[data-agent=NotReady]");
                await a.page.waitForFunction(() => document.getElementById("user-state").textContent === "Not Ready (Coffee)", null, { timeout: SHOW_MS });
                await a.page.click("button[data-agent=Ready]");
                await a.page.waitForFunction(() => document.getElementById("user-state").dataset.state === "Ready", null, { timeout: SHOW_MS });
                assert.equal(await b.page.textContent("#user-state"), "Ready");

                // agent1 dials agent2, who answers.
                await a.page.fill("#number", "15001");
                await a.page.click("#dial");
                await shows(a, [{ state: "Dialing", with: "15001", recording: "Stopped" }], "dialing");
                await shows(b, [{ state: "Ringing", with: "15000", recording: "Stopped" }], "ringing");
                await shows(c, [], "nothing");
                await click(b, "Ringing", "Answer");
                await shows(a, [{ state: "Established", with: "15001", recording: "Stopped" }], "established");
                await shows(b, [{ state: "Established", with: "15000", recording: "Stopped" }], "established");

                // agent1 records, pauses, resumes; agent2's leg is not recorded.
                await click(a, "Established", "StartCallRecording");
                await shows(a, [{ state: "Established", with: "15001", recording: "Recording" }], "recording");
                await click(a, "Established", "PauseCallRecording");
                await shows(a, [{ state: "Established", with: "15001", recording: "Paused" }], "paused");
                await click(a, "Established", "ResumeCallRecording");
                await shows(a, [{ state: "Established", with: "15001", recording: "Recording" }], "resumed");
                await shows(b, [{ state: "Established", with: "15000", recording: "Stopped" }], "b not recording");

                // agent1 consults agent3 (hold shows on agent1's page only), agent3 answers.
                await click(a, "Established", "InitiateTransfer", "15002");
                await shows(a, [
                    { state: "Held", with: "15001", recording: "Recording" },
                    { state: "Dialing", with: "15002", recording: "Stopped" },
                ], "consulting");
                await shows(c, [{ state: "Ringing", with: "15000" }], "consultation ringing");
                await click(c, "Ringing", "Answer");
                await shows(a, [
                    { state: "Held", with: "15001", recording: "Recording" },
                    { state: "Established", with: "15002", recording: "Stopped" },
                ], "consultation connected");

                // agent1 completes the transfer: agent2 and agent3 talk, agent1 has no call.
                await click(a, "Established", "CompleteTransfer");
                await shows(a, [], "transferred away");
                await shows(b, [{ state: "Established", with: "15002", recording: "Stopped" }], "now with agent3");
                await shows(c, [{ state: "Established", with: "15001" }], "now with agent2");

                // agent3 hangs up: every page is empty.
                await click(c, "Established", "Hangup");
                await shows(b, [], "released");
                await shows(c, [], "released");
                for (const x of [a, b, c]) {
                    assert.deepEqual(x.errors, [], `${x.user}: page errors`);
                    assert.equal(await x.page.textContent("#error"), "", `${x.user}: error shown`);
                }
            } finally {
                await Promise.all([a, b, c].map((x) => x.context.close().catch(() => {})));
            }
        });
    }

    test("the page, its script and the CometD client are served without credentials", T, async () => {
        if (SKIP) {
            return;
        }
        for (const [path, type] of [["/voice/", "text/html"], ["/voice/agent.mjs", "text/javascript"],
            ["/voice/cometd/cometd.js", "text/javascript"], ["/voice/cometd/LICENSE", "text/plain"],
            ["/voice/openapi.json", "application/json"]]) {
            const r = await fetch(server.baseUrl + path);
            assert.equal(r.status, 200, path);
            assert.ok(r.headers.get("content-type").startsWith(type), `${path}: ${r.headers.get("content-type")}`);
            await r.arrayBuffer();
        }
    });
});
