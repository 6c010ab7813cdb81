// Owns: the headless-Chromium end-to-end scenario of Kaskade's web client — two pages join one
// room, each must decode the other's camera, a chat message goes from A to B, A shares its screen
// and B must decode it. Prints one JSON result line on stdout; exits 1 with a reason on failure.
// Screenshots go to --artifacts. Run by tests/tests/e2e_browser.rs (and, with --url2, by
// tests/tests/e2e_browser_cascade.rs) inside a network namespace.
//
// Usage: node two_pages.mjs --url http://127.0.0.1:PORT --room ROOM [--url2 http://HOST:PORT]
//                            [--artifacts DIR] [--timeout SECONDS] [--chromium /usr/bin/chromium]
// Page A opens --url; page B opens --url2 when given (another node of the same mesh), else --url.

import {
  closeBrowser,
  decodedGrowth,
  emit,
  joinedView,
  launchChromium,
  overallTimeout,
  pageView,
  parseOptions,
  participantIdByName,
  recordFailure,
  runMain,
  StageError,
  tileOf,
  until,
} from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function parseArgs(argv) {
  const out = parseOptions(argv, { url2: null, timeout: 120 });
  out.url2 = out.url2 ? out.url2.replace(/\/+$/, '') : out.url;
  return out;
}

/** Waits until the page shows a tile of `participantId`'s `source` (with a <video>) that decodes
 * `growth` more frames than when first seen decoding. */
function framesGrowing(stage, page, participantId, source, growth, timeoutMs) {
  return decodedGrowth(stage, page, `${source} tile of ${participantId}`, tileOf(participantId, source), growth, timeoutMs, {
    shown: true,
  });
}

async function roomFromApi(page, room) {
  return page.evaluate(async (r) => {
    const resp = await fetch(`/api/rooms/${encodeURIComponent(r)}`);
    return { status: resp.status, body: resp.ok ? await resp.json() : await resp.text() };
  }, room);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const artifacts = opts.artifacts ? path.resolve(opts.artifacts) : null;
  if (artifacts) fs.mkdirSync(artifacts, { recursive: true });
  const tag = Math.random().toString(36).slice(2, 7);
  const names = { a: `Alice-${tag}`, b: `Bob-${tag}` };
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const result = { event: 'result', ok: false, room: opts.room, names };
  const started = Date.now();
  let ctx = null;
  const pages = {};
  let stage = 'launch';

  const shoot = async (label) => {
    if (!artifacts) return;
    for (const [who, page] of Object.entries(pages)) {
      try {
        await page.screenshot({ path: path.join(artifacts, `browser-${who}-${label}.png`) });
      } catch (e) {
        console.error(`screenshot ${who}-${label} failed: ${e}`);
      }
    }
  };

  const overall = overallTimeout(result, () => stage, opts.timeout);

  try {
    ctx = await launchChromium(profile, opts.chromium, { viewport: { width: 1280, height: 800 } });
    pages.a = ctx.pages()[0] ?? (await ctx.newPage());
    pages.b = await ctx.newPage();
    for (const [who, page] of Object.entries(pages)) {
      page.on('console', (m) => console.error(`[${who}] ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => console.error(`[${who}] pageerror: ${e}`));
    }

    stage = 'join';
    const urls = { a: opts.url, b: opts.url2 };
    for (const who of ['a', 'b']) {
      const q = new URLSearchParams({ room: opts.room, name: names[who], autojoin: '1' });
      await pages[who].goto(`${urls[who]}/?${q}`, { timeout: 20000 });
    }
    for (const who of ['a', 'b']) await joinedView(stage, pages[who], `page ${who}`, 20000);

    stage = 'participants';
    const ids = {};
    [ids.b, ids.a] = await Promise.all([
      participantIdByName(stage, pages.a, names.b, 20000),
      participantIdByName(stage, pages.b, names.a, 20000),
    ]);
    result.ids = ids;

    stage = 'camera';
    const [aSeesB, bSeesA] = await Promise.all([
      framesGrowing(stage, pages.a, ids.b, 'camera', 30, 30000),
      framesGrowing(stage, pages.b, ids.a, 'camera', 30, 30000),
    ]);
    result.a_sees_b_camera = aSeesB;
    result.b_sees_a_camera = bSeesA;

    stage = 'audio';
    result.audio = {};
    for (const who of ['a', 'b']) {
      result.audio[who] = await until(stage, `page ${who} receiving audio`, 20000, async () => {
        const s = await pageView(pages[who]);
        const a = s.stats?.audio ?? {};
        return (a.packetsReceived ?? 0) > 0 ? { ok: true, value: a } : { ok: false, last: a };
      });
    }
    result.api_after_join = await roomFromApi(pages.a, opts.room);
    await shoot('camera');

    // Simulcast: B picks A's low layer, then the high one again; the decoded size follows.
    stage = 'layers';
    const camera = (result.api_after_join.body?.tracks ?? []).find(
      (t) => t.participant === ids.a && t.source === 'camera',
    );
    result.layers = { published: camera?.layers ?? [] };
    if (result.layers.published.length < 2) {
      throw new StageError(stage, `A's camera is not published with simulcast: ${JSON.stringify(camera)}`);
    }
    const tileSize = async () => {
      const s = await pageView(pages.b);
      const tile = (s.stats?.tiles ?? []).find((t) => t.trackId === bSeesA.trackId);
      return { width: tile?.frameWidth ?? 0, height: tile?.frameHeight ?? 0, frames: tile?.framesDecoded ?? 0 };
    };
    const pick = async (layer, wanted, what) => {
      const asked = await pages.b.evaluate(([t, l]) => window.kaskade.setLayer(t, l), [bSeesA.trackId, layer]);
      if (asked === false) throw new StageError(stage, `setLayer(${layer}) was refused by the page`);
      return until(stage, what, 20000, async () => {
        const size = await tileSize();
        return size.width > 0 && wanted(size.width) ? { ok: true, value: size } : { ok: false, last: size };
      });
    };
    // Chromium starts a simulcast camera on its lowest layer and adds the upper ones as its
    // bandwidth estimate grows (later on a loaded machine): wait until B gets one above the
    // lowest (320x180), or asking for a smaller one could never be seen.
    result.layers.initial = await until(stage, 'B to decode a layer of A above the lowest', 20000, async () => {
      const size = await tileSize();
      return size.width > 320 ? { ok: true, value: size } : { ok: false, last: size };
    });
    result.layers.low = await pick('low', (w) => w < result.layers.initial.width, 'B to decode a smaller layer of A');
    // Dynacast: B is A's only viewer and wants the lowest layer: the node has A pause the others.
    result.layers.sent_by_a = await until(stage, 'A to be told to send only its lowest layer', 20000, async () => {
      const sent = await pages.a.evaluate(() => window.kaskade.layersSent);
      return Array.isArray(sent) && sent[0] === true && sent.slice(1).every((a) => a === false)
        ? { ok: true, value: sent }
        : { ok: false, last: sent };
    });
    result.layers.high = await pick('high', (w) => w >= result.layers.initial.width, 'B to decode the full layer of A again');

    stage = 'chat';
    const chatText = `hello from ${names.a} ${Date.now()}`;
    await pages.a.fill('#chat-input', chatText);
    await pages.a.click('#chat-send');
    result.chat = await until(stage, 'B to show the chat message', 15000, async () => {
      const msgs = await pages.b.evaluate(() =>
        [...document.querySelectorAll('#chat-log .chat-message')].map((m) => ({
          name: m.querySelector('.chat-name')?.textContent?.trim() ?? '',
          text: m.querySelector('.chat-text')?.textContent?.trim() ?? '',
        })),
      );
      const hit = msgs.find((m) => m.text.includes(chatText));
      return hit ? { ok: true, value: { sent: chatText, ...hit } } : { ok: false, last: msgs };
    });
    const inputAfter = await pages.a.inputValue('#chat-input');
    result.chat.input_cleared = inputAfter === '';
    await shoot('chat');

    stage = 'screen';
    await pages.a.click('#share-screen');
    result.screen = await framesGrowing(stage, pages.b, ids.a, 'screen', 15, 30000);
    result.api_after_screen = await roomFromApi(pages.a, opts.room);
    await shoot('screen');

    stage = 'still-joined';
    for (const who of ['a', 'b']) {
      const s = await pageView(pages[who]);
      if (s.state !== 'joined') throw new StageError(stage, `page ${who} left state joined: ${s.state} (${s.error ?? s.status})`);
    }
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
