// Small helpers shared by the interop tests: bounded waiting, unique names.

import { setTimeout as sleep } from "node:timers/promises";

export { sleep };

/** A short random alphanumeric string (valid in Bayeux channel segments and message ids). */
export function uid(len = 10) {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    let s = "";
    for (let i = 0; i < len; ++i) {
        s += alphabet[Math.floor(Math.random() * alphabet.length)];
    }
    return s;
}

/**
 * Polls `predicate` every `interval` ms until it returns a truthy value, which is returned.
 * Rejects after `timeout` ms with an error naming `what` (and `details()` when given).
 */
export async function waitFor(predicate, { timeout = 10000, interval = 10, what = "condition", details } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
        const value = await predicate();
        if (value) {
            return value;
        }
        if (Date.now() >= deadline) {
            let extra = "";
            if (details) {
                try {
                    extra = "\n" + details();
                } catch (x) {
                    extra = "\n(details unavailable: " + x + ")";
                }
            }
            throw new Error(`timed out after ${timeout} ms waiting for ${what}${extra}`);
        }
        await sleep(interval);
    }
}

/** Races `promise` against a timer; rejects with a message naming `what` on expiry. */
export function withTimeout(promise, timeout, what = "operation") {
    let timer;
    const expiry = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms: ${what}`)), timeout);
    });
    return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}

/** JSON deep copy of a Bayeux message (live objects in client failure replies are elided, see show()). */
export function copy(value) {
    return value === undefined ? undefined : JSON.parse(show(value));
}

/**
 * JSON text of a value for assertion messages. Safe on the client's failure replies, which carry
 * live transport objects (circular): those keys and repeated objects are elided.
 */
export function show(value) {
    const seen = new WeakSet();
    try {
        return JSON.stringify(value, (key, v) => {
            if (key === "transport" || key === "xhr" || key === "webSocket") {
                return v && typeof v === "object" ? "[elided]" : v;
            }
            if (v && typeof v === "object") {
                if (seen.has(v)) {
                    return "[circular]";
                }
                seen.add(v);
            }
            return v;
        });
    } catch (x) {
        return String(value) + " (" + x.message + ")";
    }
}
