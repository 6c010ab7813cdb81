// Owns: the browser side of the bandwidth test (tests/tests/e2e_bandwidth.rs): pages of Kaskade's
// web client that publish a simulcast camera or watch it, and report what they decode twice a
// second, so the test can shape a viewer's link and watch its layer follow.
//
// Usage: node bandwidth.mjs --url URL --room ROOM --pages publisher,viewer|viewer
//                           [--seconds N] [--artifacts DIR] [--chromium PATH] [--tag NAME]
//                           [--publisher-token T] [--viewer-token T]   (access tokens, as ?token=)
// Prints JSON lines: {"event":"joined","page":…}, then per viewer page every 500 ms
// {"event":"sample","page":…,"t_ms":…,"width":…,"height":…,"frames":…,"estimate_bps":…}
// and at the end {"event":"result","ok":…}.

import { emit, joinedView, launchChromium, pageView, parseOptions, sleep } from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SAMPLE_MS = 500;

function parseArgs(argv) {
  return parseOptions(argv, {
    pages: 'viewer',
    seconds: 60,
    tag: 'bw',
    'publisher-token': null,
    'viewer-token': null,
  });
}

/** The first remote camera the page decodes, from the page's stats API. */
async function cameraSample(page) {
  const v = await pageView(page);
  const tile = (v.stats?.tiles ?? []).find((t) => t.source === 'camera');
  return {
    state: v.state,
    width: tile?.frameWidth ?? 0,
    height: tile?.frameHeight ?? 0,
    frames: tile?.framesDecoded ?? 0,
    estimate_bps: v.receiveQuality?.estimate_bps ?? null,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const roles = opts.pages.split(',');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const ctx = await launchChromium(profile, opts.chromium, {
    // The node is reached on a veth address, not localhost: let the page use the (fake) camera.
    extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${opts.url}`],
    viewport: { width: 1280, height: 800 },
  });
  const pages = {};
  let ok = false;
  let reason = '';
  try {
    for (const role of roles) {
      const page = Object.keys(pages).length === 0 && ctx.pages()[0] ? ctx.pages()[0] : await ctx.newPage();
      page.on('pageerror', (e) => console.error(`[${role}] pageerror: ${e}`));
      const q = { room: opts.room, name: `${opts.tag}-${role}`, autojoin: '1' };
      // Viewers watch only (the page ignores `role` if it does not know it: it then publishes too).
      if (role === 'viewer') q.role = 'audience';
      // Access tokens (the node enforces access control off loopback): the publisher's opens
      // the room, the viewers' join it.
      const token = role === 'publisher' ? opts['publisher-token'] : opts['viewer-token'];
      if (token) q.token = token;
      await page.goto(`${opts.url}/?${new URLSearchParams(q)}`, { timeout: 20000 });
      await joinedView('join', page, `${role} page`, 20000, { failStates: [] });
      pages[role] = page;
      emit({ event: 'joined', page: `${opts.tag}-${role}` });
    }
    const started = Date.now();
    const end = started + opts.seconds * 1000;
    while (Date.now() < end) {
      for (const [role, page] of Object.entries(pages)) {
        if (role !== 'viewer') continue;
        const s = await cameraSample(page);
        emit({ event: 'sample', page: `${opts.tag}-${role}`, t_ms: Date.now() - started, ...s });
      }
      await sleep(SAMPLE_MS);
    }
    ok = true;
  } catch (e) {
    reason = String(e?.message ?? e);
  } finally {
    if (opts.artifacts) {
      for (const [role, page] of Object.entries(pages)) {
        await page
          .screenshot({ path: path.join(opts.artifacts, `bandwidth-${opts.tag}-${role}.png`) })
          .catch(() => {});
      }
    }
    await ctx.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  emit({ event: 'result', ok, reason });
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  emit({ event: 'result', ok: false, reason: String(e?.stack ?? e) });
  process.exit(1);
});
