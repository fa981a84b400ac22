// What a foreign page can try against a credentialed Bayeux endpoint (see xsite.test.mjs): load
// it as a <script> with a JSONP handshake. The browser attaches the user's cookies (and cached
// Basic credentials) to that GET and sends no Origin; if the server answered it, the callback
// would hand the page a clientId bound to the user, and the next script loads would subscribe
// to the user's channels. `targets` (a JSON array of endpoint URLs) names the endpoints to try.

const params = new URLSearchParams(window.location.search);
const targets = JSON.parse(params.get("targets") || "[]");

const state = { results: {} };
window.__attack = state;

targets.forEach((target, i) => {
    const callback = `steal${i}`;
    const result = { done: false, loaded: false, error: false, replies: null };
    state.results[target] = result;
    window[callback] = (replies) => {
        result.replies = replies;
    };
    const handshake = [{ id: "1", channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: ["callback-polling"] }];
    const script = document.createElement("script");
    script.src = `${target}/handshake?` + new URLSearchParams({ jsonp: callback, message: JSON.stringify(handshake) });
    script.onload = () => {
        result.loaded = true;
        result.done = true;
    };
    script.onerror = () => {
        result.error = true;
        result.done = true;
    };
    document.head.appendChild(script);
});
