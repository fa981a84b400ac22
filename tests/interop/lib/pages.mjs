// What the browser tests share: the Chromium launch settings and a small static HTTP server on
// 127.0.0.1 (another port than the Bayeux server, so its pages are another origin of the same
// site) serving the test pages, their scripts and the cometd ES modules; nothing else.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

export const CHROMIUM = process.env.BAYEUX_CHROMIUM || "/usr/bin/chromium";
export const SKIP_BROWSER = process.env.BAYEUX_SKIP_BROWSER === "1";
export const CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

const HTML = "text/html; charset=utf-8";
const JS = "text/javascript; charset=utf-8";

/** The page files, by URL path: [file, content type]. */
export const PAGE_FILES = {
    "/": [path.join(HERE, "browser", "index.html"), HTML],
    "/index.html": [path.join(HERE, "browser", "index.html"), HTML],
    "/app.mjs": [path.join(HERE, "browser", "app.mjs"), JS],
    "/attack.html": [path.join(HERE, "browser", "attack.html"), HTML],
    "/attack.mjs": [path.join(HERE, "browser", "attack.mjs"), JS],
    "/blank.html": [path.join(HERE, "browser", "blank.html"), HTML],
};

/** [file, content type] for a page path, a cometd module (`/cometd/Name.js`), or undefined. */
export function pageFile(pathname) {
    const entry = PAGE_FILES[pathname];
    if (entry) {
        return entry;
    }
    const m = /^\/cometd\/([A-Za-z0-9]+\.js)$/.exec(pathname);
    return m ? [path.join(HERE, "node_modules", "cometd", m[1]), JS] : undefined;
}

/** Starts the static server on 127.0.0.1, port chosen by the system. */
export function startPageServer() {
    const server = http.createServer((req, res) => {
        const pathname = new URL(req.url, "http://127.0.0.1").pathname;
        if (pathname === "/favicon.ico") {
            res.writeHead(204);
            res.end();
            return;
        }
        const entry = pageFile(pathname);
        if (!entry || req.method !== "GET") {
            res.writeHead(404, { "Content-Type": "text/plain" });
            res.end("not found");
            return;
        }
        fs.readFile(entry[0], (err, body) => {
            if (err) {
                res.writeHead(404, { "Content-Type": "text/plain" });
                res.end("not found");
                return;
            }
            res.writeHead(200, { "Content-Type": entry[1], "Cache-Control": "no-store" });
            res.end(body);
        });
    });
    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve(server));
    });
}

/** Stops a page server started by startPageServer. */
export function stopPageServer(server) {
    if (server) {
        server.closeAllConnections?.();
        server.close();
    }
}
