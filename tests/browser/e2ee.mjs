// Owns: the headless-Chromium end-to-end encryption scenario of Kaskade's web client — pages A and
// B join one room with the same passphrase (`?e2ee=`), publish camera and microphone, and each
// must decode the other's camera with the encoded-transform counters showing encrypted and
// decrypted frames; B switches A's camera to its low simulcast layer with the tile's layer control
// and back (the node picks layers from RTP headers and the clear frame header only); A shares its
// screen (a sender added later) and B decodes it; page C joins with another passphrase
// (`#e2ee=`) and must decrypt nothing (every frame fails, nothing decoded); page D joins without
// E2EE and what its decoder makes of the ciphertext is reported (not asserted).
// Prints one JSON result line on stdout; exits 1 with a reason on failure. Screenshots go to
// --artifacts (e2ee-*.png). Run by tests/tests/e2e_browser_e2ee.rs inside a network namespace.
//
// Usage: node e2ee.mjs --url http://127.0.0.1:PORT --room ROOM [--passphrase P] [--artifacts DIR]
//                      [--timeout SECONDS] [--chromium /usr/bin/chromium]

import {
  closeBrowser,
  decodedGrowth,
  emit,
  launchChromium,
  overallTimeout,
  pageView,
  parseOptions,
  recordFailure,
  runMain,
  sleep,
  StageError,
  until,
} from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** How long C and D watch the encrypted media before their counters are read. */
const WATCH_MS = 5000;

async function main() {
  const opts = parseOptions(process.argv.slice(2), { timeout: 200, passphrase: 'secret-passphrase' });
  const artifacts = opts.artifacts ? path.resolve(opts.artifacts) : null;
  if (artifacts) fs.mkdirSync(artifacts, { recursive: true });
  const tag = Math.random().toString(36).slice(2, 7);
  const names = { a: `Alice-${tag}`, b: `Bob-${tag}`, c: `Mallory-${tag}`, d: `Plain-${tag}` };
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const result = { event: 'result', ok: false, room: opts.room, names };
  const started = Date.now();
  let ctx = null;
  const pages = {};
  let stage = 'launch';

  const shoot = async (label) => {
    if (!artifacts) return;
    for (const [who, page] of Object.entries(pages)) {
      if (page.isClosed()) continue;
      try {
        await page.screenshot({ path: path.join(artifacts, `e2ee-${who}-${label}.png`) });
      } catch (e) {
        console.error(`screenshot ${who}-${label} failed: ${e}`);
      }
    }
  };

  const overall = overallTimeout(result, () => stage, opts.timeout);

  /** Opens page `who` with the query `extra` (and `hash`) and waits until it has joined. */
  const open = async (who, extra, hash) => {
    const page = who === 'a' ? (ctx.pages()[0] ?? (await ctx.newPage())) : await ctx.newPage();
    pages[who] = page;
    page.on('console', (m) => console.error(`[${who}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console.error(`[${who}] pageerror: ${e}`));
    const q = new URLSearchParams({ room: opts.room, name: names[who], autojoin: '1', ...extra });
    await page.goto(`${opts.url}/?${q}${hash ? `#${new URLSearchParams(hash)}` : ''}`, { timeout: 20000 });
    await until(stage, `page ${who} in state joined`, 25000, async () => {
      const v = await pageView(page);
      if (v.state === 'error') throw new StageError(stage, `page ${who} is in state error: ${v.error ?? v.status}`);
      return v.state === 'joined' ? { ok: true } : { ok: false, last: { state: v.state, status: v.status, error: v.error } };
    });
    return page;
  };

  /** The page's E2EE indicator and counters. */
  const e2eeOf = async (who) =>
    pages[who].evaluate(() => {
      const label = document.querySelector('#e2ee-label');
      return {
        ...window.kaskade.e2ee,
        indicator: label && !label.hidden ? label.textContent.trim() : null,
      };
    });

  /** Sums of the video tiles' counters of a page (what arrived and what was decoded). */
  const videoTotals = async (who) => {
    const v = await pageView(pages[who]);
    const tiles = v.stats?.tiles ?? [];
    return {
      tiles: tiles.length,
      packetsReceived: tiles.reduce((n, t) => n + (t.packetsReceived ?? 0), 0),
      framesDecoded: tiles.reduce((n, t) => n + (t.framesDecoded ?? 0), 0),
      audioPackets: v.stats?.audio?.packetsReceived ?? 0,
    };
  };

  try {
    ctx = await launchChromium(profile, opts.chromium, { viewport: { width: 1280, height: 800 } });

    // A first, then B: A's decrypting receivers for B are added to a running call.
    stage = 'join';
    await open('a', { e2ee: opts.passphrase });
    await open('b', { e2ee: opts.passphrase });

    stage = 'e2ee-on';
    for (const who of ['a', 'b']) {
      const e = await e2eeOf(who);
      if (!e.enabled || !e.mode || !e.indicator) {
        throw new StageError(stage, `page ${who} does not show E2EE on: ${JSON.stringify(e)}`);
      }
    }

    stage = 'participants';
    const ids = {};
    for (const who of ['a', 'b']) ids[who] = (await pageView(pages[who])).participantId;
    result.ids = ids;

    stage = 'camera';
    const camOf = (id) => (t) => t.participantId === id && t.source === 'camera';
    const [aSeesB, bSeesA] = await Promise.all([
      decodedGrowth(stage, pages.a, "B's camera at A", camOf(ids.b), 30, 30000),
      decodedGrowth(stage, pages.b, "A's camera at B", camOf(ids.a), 30, 30000),
    ]);
    result.a_sees_b_camera = aSeesB;
    result.b_sees_a_camera = bSeesA;

    stage = 'audio';
    result.audio = {};
    for (const who of ['a', 'b']) {
      result.audio[who] = await until(stage, `page ${who} receiving audio`, 20000, async () => {
        const t = await videoTotals(who);
        return t.audioPackets > 0 ? { ok: true, value: { packetsReceived: t.audioPackets } } : { ok: false, last: t };
      });
    }
    result.e2ee_after_camera = { a: await e2eeOf('a'), b: await e2eeOf('b') };
    await shoot('camera');

    // Simulcast under E2EE: B picks A's low layer with the tile's quality control, then high.
    stage = 'layers';
    const tileSize = async () => {
      const v = await pageView(pages.b);
      const t = (v.stats?.tiles ?? []).find((x) => x.trackId === bSeesA.trackId);
      return { width: t?.frameWidth ?? 0, height: t?.frameHeight ?? 0, frames: t?.framesDecoded ?? 0, layer: t?.layer ?? null };
    };
    const pick = async (layer, wanted, what) => {
      await pages.b.selectOption(`.tile[data-track-id="${bSeesA.trackId}"] select.tile-layer`, layer, { timeout: 10000 });
      return until(stage, what, 25000, async () => {
        const size = await tileSize();
        return size.width > 0 && wanted(size.width) ? { ok: true, value: size } : { ok: false, last: size };
      });
    };
    result.layers = {};
    // Chromium adds the upper layers as its bandwidth estimate grows: wait for one above 320x180.
    result.layers.initial = await until(stage, 'B to decode a layer of A above the lowest', 25000, async () => {
      const size = await tileSize();
      return size.width > 320 ? { ok: true, value: size } : { ok: false, last: size };
    });
    result.layers.low = await pick('low', (w) => w < result.layers.initial.width, 'B to decode a smaller layer of A');
    result.layers.low_frames = await decodedGrowth(stage, pages.b, "A's low layer at B", camOf(ids.a), 15, 15000);
    result.layers.high = await pick('high', (w) => w >= result.layers.initial.width, 'B to decode the full layer of A again');
    await shoot('layers');

    // A sender added later (screen share) gets its transform too.
    stage = 'screen';
    await pages.a.click('#share-screen');
    result.screen = await decodedGrowth(
      stage,
      pages.b,
      "A's screen at B",
      (t) => t.participantId === ids.a && t.source === 'screen',
      15,
      30000,
    );
    await shoot('screen');

    // Another passphrase: every frame fails to decrypt and none reaches the decoder.
    stage = 'wrong-passphrase';
    await open('c', { nocam: '1', nomic: '1' }, { e2ee: `not-${opts.passphrase}` });
    await until(stage, 'C to receive media and fail to decrypt it', 25000, async () => {
      const [e, t] = [await e2eeOf('c'), await videoTotals('c')];
      return e.decryptFailures > 0 && t.packetsReceived > 0 ? { ok: true } : { ok: false, last: { e2ee: e, video: t } };
    });
    await sleep(WATCH_MS);
    result.wrong_passphrase = { e2ee: await e2eeOf('c'), video: await videoTotals('c') };
    await shoot('wrong-passphrase');
    await pages.c.close({ runBeforeUnload: true });

    // No E2EE at all: the node forwards the ciphertext as it is; what the decoder makes of it is
    // reported only (VP8 may decode noise from it).
    stage = 'no-e2ee';
    await open('d', { nocam: '1', nomic: '1' });
    await until(stage, 'D to receive video', 25000, async () => {
      const t = await videoTotals('d');
      return t.packetsReceived > 0 ? { ok: true } : { ok: false, last: t };
    });
    await sleep(WATCH_MS);
    result.plain_viewer = { e2ee: await e2eeOf('d'), video: await videoTotals('d') };
    await shoot('no-e2ee');
    await pages.d.close({ runBeforeUnload: true });

    stage = 'still-joined';
    for (const who of ['a', 'b']) {
      const v = await pageView(pages[who]);
      if (v.state !== 'joined') throw new StageError(stage, `page ${who} left state joined: ${v.state} (${v.error ?? v.status})`);
    }
    result.e2ee_final = { a: await e2eeOf('a'), b: await e2eeOf('b') };
    result.ok = true;
    result.elapsed_ms = Date.now() - started;
  } catch (e) {
    await recordFailure(result, e, stage, pages, pageView);
    await shoot('failure');
  } finally {
    await closeBrowser(ctx, profile, overall);
  }
  emit(result);
  process.exit(result.ok ? 0 : 1);
}

runMain(main);
