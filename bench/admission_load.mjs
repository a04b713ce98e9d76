// Open-loop HTTPS load generator for bench/admission.py (Node's TLS and HTTP are C++, so the generator
// costs the 2-core machine far less CPU than a Python client would, leaving it to the server under test).
// Usage: node admission_load.mjs URL CA_FILE BODIES_JSONL RATE DURATION_S  -> one JSON line on stdout
import fs from "node:fs";
import https from "node:https";

const [url, caFile, bodiesFile, rateArg, durArg] = process.argv.slice(2);
const rate = Number(rateArg), duration = Number(durArg);
const ca = fs.readFileSync(caFile);
const bodies = fs.readFileSync(bodiesFile, "utf8").split("\n").filter(Boolean).map((l) => Buffer.from(l));
const agent = new https.Agent({ keepAlive: true, maxSockets: 64, ca });
const target = new URL(url);
const lat = [];
const errors = [];

function post(body) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = https.request(
      { host: target.hostname, port: target.port, path: "/validate", method: "POST", agent,
        headers: { "Content-Type": "application/json", "Content-Length": body.length }, timeout: 10000 },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const ms = Number(process.hrtime.bigint() - t0) / 1e6;
          let ok = res.statusCode === 200;
          try { ok = ok && "response" in JSON.parse(Buffer.concat(chunks)); } catch { ok = false; }
          if (ok) lat.push(ms); else errors.push(`HTTP ${res.statusCode}`);
          resolve();
        });
      });
    req.on("error", (e) => { errors.push(e.code || String(e)); resolve(); });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end(body);
  });
}

// warm-up: connections and the server's caches, not measured
for (let i = 0; i < 50; i++) await post(bodies[i % bodies.length]);
lat.length = 0;
errors.length = 0;
const n = Math.round(rate * duration);
const start = performance.now();
const pending = [];
for (let i = 0; i < n; i++) {
  const wait = start + (i * 1000) / rate - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  pending.push(post(bodies[i % bodies.length]));
}
await Promise.all(pending);
const elapsed = (performance.now() - start) / 1000;
agent.destroy();
process.stdout.write(JSON.stringify({ sent: n, elapsed, latencies_ms: lat, errors }) + "\n");
