// Starts and stops the bayeux-server binary under test.
//
// Contract: `$BAYEUX_SERVER_BIN --listen 127.0.0.1:PORT [extra args]` prints, early on stdout,
// a line containing `listening on http://127.0.0.1:PORT`; the Bayeux endpoint is
// `http://127.0.0.1:PORT/cometd`.
//
// Environment:
//   BAYEUX_SERVER_BIN   path of the server binary (required)
//   BAYEUX_SERVER_ARGS  extra arguments, whitespace-separated, appended to every start (optional)
//   BAYEUX_SERVER_LOG=1 echo the server's stdout/stderr to this process's stderr (optional)

import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { sleep } from "./util.mjs";

const LISTENING_RE = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
const MAX_LOG = 64 * 1024;

const live = new Set();

// Last resort: never leave a server behind if the test process exits abruptly.
process.on("exit", () => {
    for (const server of live) {
        try {
            server.proc.kill("SIGKILL");
        } catch {
            // already gone
        }
    }
});

export function serverBin() {
    const bin = process.env.BAYEUX_SERVER_BIN;
    if (!bin) {
        throw new Error("BAYEUX_SERVER_BIN is not set: point it at the bayeux-server binary (e.g. target/debug/bayeux-server)");
    }
    const resolved = path.resolve(bin);
    try {
        fs.accessSync(resolved, fs.constants.X_OK);
    } catch {
        throw new Error(`BAYEUX_SERVER_BIN=${bin} is not an executable file`);
    }
    return resolved;
}

class ServerProcess {
    constructor(proc) {
        this.proc = proc;
        this.pid = proc.pid;
        this.port = 0;
        this.log = "";
        this.exited = false;
        this.exitCode = null;
        this.exitSignal = null;
        this.exitPromise = new Promise((resolve) => {
            proc.once("exit", (code, signal) => {
                this.exited = true;
                this.exitCode = code;
                this.exitSignal = signal;
                live.delete(this);
                resolve();
            });
        });
    }

    get baseUrl() {
        return `http://127.0.0.1:${this.port}`;
    }

    /** The Bayeux endpoint for the CometD client's `url` configuration. */
    get cometdUrl() {
        return `${this.baseUrl}/cometd`;
    }

    append(text) {
        this.log += text;
        if (this.log.length > MAX_LOG) {
            this.log = this.log.slice(this.log.length - MAX_LOG);
        }
    }

    /** The tail of the server's combined output, for failure messages. */
    output() {
        return this.log;
    }

    /** Terminates the server (SIGTERM, then SIGKILL after 3 s) and waits for it to exit. */
    async stop() {
        if (this.exited) {
            return;
        }
        try {
            this.proc.kill("SIGTERM");
        } catch {
            // already gone
        }
        const termed = await Promise.race([this.exitPromise.then(() => true), sleep(3000).then(() => false)]);
        if (!termed && !this.exited) {
            try {
                this.proc.kill("SIGKILL");
            } catch {
                // already gone
            }
            await Promise.race([this.exitPromise, sleep(3000)]);
        }
    }
}

function startOnce(port, args, startTimeoutMs) {
    const bin = serverBin();
    const extra = (process.env.BAYEUX_SERVER_ARGS || "").split(/\s+/).filter(Boolean);
    const argv = ["--listen", `127.0.0.1:${port}`, ...args, ...extra];
    const proc = spawn(bin, argv, { stdio: ["ignore", "pipe", "pipe"] });
    const server = new ServerProcess(proc);
    live.add(server);
    const echo = process.env.BAYEUX_SERVER_LOG === "1";

    return new Promise((resolve, reject) => {
        let stdoutText = "";
        let settled = false;
        const settle = (fn, value) => {
            if (!settled) {
                settled = true;
                clearTimeout(timer);
                fn(value);
            }
        };
        const timer = setTimeout(() => {
            server.stop().finally(() =>
                settle(reject, new Error(`server did not print 'listening on http://127.0.0.1:PORT' within ${startTimeoutMs} ms\n--- server output ---\n${server.output()}`)));
        }, startTimeoutMs);

        proc.on("error", (err) => settle(reject, new Error(`could not spawn ${bin}: ${err.message}`)));
        proc.stdout.setEncoding("utf8");
        proc.stderr.setEncoding("utf8");
        proc.stdout.on("data", (chunk) => {
            server.append(chunk);
            if (echo) {
                process.stderr.write(`[server ${proc.pid} out] ${chunk}`);
            }
            if (!settled) {
                stdoutText += chunk;
                const m = LISTENING_RE.exec(stdoutText);
                if (m) {
                    server.port = Number(m[1]);
                    if (port !== 0 && server.port !== port) {
                        server.stop().finally(() =>
                            settle(reject, new Error(`asked the server to listen on port ${port} but it reports ${server.port}`)));
                        return;
                    }
                    settle(resolve, server);
                }
            }
        });
        proc.stderr.on("data", (chunk) => {
            server.append(chunk);
            if (echo) {
                process.stderr.write(`[server ${proc.pid} err] ${chunk}`);
            }
        });
        server.exitPromise.then(() => {
            settle(reject, new Error(`server exited (code ${server.exitCode}, signal ${server.exitSignal}) before it was listening\n--- server output ---\n${server.output()}`));
        });
    });
}

/**
 * Starts the server. `port` 0 lets the server pick one; a fixed port (used to restart a server
 * on the port of a stopped one) is retried for a few seconds in case the port is still busy.
 */
export async function startServer({ port = 0, args = [], startTimeoutMs = 10000, bindRetryMs = 5000 } = {}) {
    const deadline = Date.now() + bindRetryMs;
    for (;;) {
        try {
            return await startOnce(port, args, startTimeoutMs);
        } catch (err) {
            if (port === 0 || Date.now() >= deadline || /did not print|could not spawn|reports/.test(err.message)) {
                throw err;
            }
            await sleep(200);
        }
    }
}
