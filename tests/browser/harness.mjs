// Owns: what the browser scenarios (two_pages.mjs, failover.mjs, e2ee.mjs, classroom.mjs,
// bandwidth.mjs, lobby.mjs, operator.mjs) share — the Chromium flags checked on this machine
// kind, JSON-lines output, polling a page until a condition holds with a stage-tagged error when
// it does not, reading a page's test hooks and DOM (pageView, joinedView, participantIdByName,
// decodedGrowth), and a scenario's start and end (runMain, launchChromium, overallTimeout,
// recordFailure, closeBrowser).

import fs from 'node:fs';
import { chromium } from 'playwright-core';

// Fake camera/microphone/screen without prompts, no GPU, no network services of the browser's
// own, no throttling of pages that are not in front.
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream=fps=30',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** How often `until` polls. */
export const POLL_MS = 250;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One JSON object per stdout line. */
export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

/** A failure of one named stage of a scenario (reported as the result's `stage`). */
export class StageError extends Error {
  constructor(stage, message) {
    super(message);
    this.stage = stage;
  }
}

/** Polls `probe` (returning {ok, value} or {ok:false, last}) until ok or `timeoutMs` passes. */
export async function until(stage, what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    const r = await probe();
    if (r.ok) return r.value;
    last = r.last;
    if (Date.now() > deadline) {
      throw new StageError(stage, `timed out after ${timeoutMs / 1000} s waiting for ${what}; last: ${JSON.stringify(last)}`);
    }
    await sleep(POLL_MS);
  }
}

/**
 * `--key value` options over `defaults` (unknown keys refused); `--url` and `--room` are required,
 * the URL loses trailing slashes, numeric defaults stay numbers, Chromium defaults to
 * $KASKADE_CHROMIUM or /usr/bin/chromium.
 */
export function parseOptions(argv, defaults) {
  const out = { url: null, room: null, artifacts: null, chromium: null, ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out)) throw new Error(`unknown option ${argv[i]}`);
    out[key] = typeof defaults[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!out.url || !out.room) throw new Error('--url and --room are required');
  out.url = out.url.replace(/\/+$/, '');
  out.chromium = out.chromium || process.env.KASKADE_CHROMIUM || '/usr/bin/chromium';
  return out;
}

/**
 * What a Kaskade page reports through its test hooks and DOM: page state, status line, the
 * visible error banner, our participant id, role, the room's settings, `kaskade.receiveQuality`,
 * `kaskade.e2ee`, `kaskade.stats()`, the participant list and the video tiles.
 */
export async function pageView(page) {
  return page.evaluate(async () => {
    const k = window.kaskade;
    const banner = document.querySelector('#error-banner');
    let stats = null;
    let statsError = null;
    try {
      if (k && typeof k.stats === 'function') stats = await k.stats();
      else statsError = 'window.kaskade.stats is missing';
    } catch (e) {
      statsError = String(e);
    }
    return {
      state: document.body?.dataset?.state ?? null,
      status: document.querySelector('#status')?.textContent?.trim() ?? null,
      error: banner && !banner.hidden ? banner.textContent.trim() : null,
      participantId: k?.participantId ?? null,
      role: k?.role ?? null,
      settings: k?.settings ?? null,
      receiveQuality: k?.receiveQuality ?? null,
      e2ee: k?.e2ee ?? null,
      stats,
      statsError,
      participants: [...document.querySelectorAll('#participants li[data-participant-id]')].map((li) => ({
        id: li.dataset.participantId,
        role: li.dataset.role,
        text: li.textContent.trim(),
      })),
      tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => ({
        participantId: t.dataset.participantId,
        source: t.dataset.source,
        trackId: t.dataset.trackId,
        stage: t.dataset.stage,
        quality: t.querySelector('.tile-quality')?.textContent ?? '',
        hasVideo: !!t.querySelector('video'),
      })),
    };
  });
}

/** Waits until page `who` is in state joined (`check(view)` may ask more); a page in state
 * error (or one of `failStates`) fails the stage at once. Returns the page's view. */
export async function joinedView(stage, page, who, timeoutMs, { check = () => true, failStates = ['error'] } = {}) {
  return until(stage, `${who} in state joined`, timeoutMs, async () => {
    const v = await pageView(page);
    if (failStates.includes(v.state)) throw new StageError(stage, `${who} is in state ${v.state}: ${v.error ?? v.status}`);
    return v.state === 'joined' && check(v)
      ? { ok: true, value: v }
      : { ok: false, last: { state: v.state, role: v.role, status: v.status, error: v.error } };
  });
}

/** Waits until `page` lists a participant whose entry shows `name`; returns that id. */
export async function participantIdByName(stage, page, name, timeoutMs) {
  return until(stage, `a participant named ${name}`, timeoutMs, async () => {
    const v = await pageView(page);
    const p = v.participants.find((p) => p.text.includes(name));
    return p ? { ok: true, value: p.id } : { ok: false, last: { participants: v.participants, state: v.state } };
  });
}

/** A `pick` for decodedGrowth: the tile of `participantId`'s `source` (e.g. 'camera'). */
export const tileOf = (participantId, source) => (t) => t.participantId === participantId && t.source === source;

/**
 * Waits until the video tile `pick(tile)` selects (from `kaskade.stats().tiles`) has decoded
 * `growth` frames more than when it was first seen decoding (counted again when the tile's track
 * changes); returns the growth, the frame rate over that span and the decoded size. With
 * `shown`, the page must also show that tile (a DOM tile that `pick` selects, with a <video>)
 * from the first counted frame on; the result then carries its `domTrackId` and whether it is on
 * the classroom `stage`.
 */
export async function decodedGrowth(stage, page, what, pick, growth, timeoutMs, { shown = false } = {}) {
  const started = Date.now();
  let first = null;
  return until(stage, `${what} decoding ${growth} more frames`, timeoutMs, async () => {
    const v = await pageView(page);
    const tile = (v.stats?.tiles ?? []).find(pick);
    const dom = shown ? v.tiles.find((t) => t.hasVideo && pick(t)) : null;
    const visible = !shown || !!dom;
    const frames = tile?.framesDecoded ?? 0;
    if (tile && visible && frames > 0 && (first === null || tile.trackId !== first.trackId)) {
      first = { frames, at: Date.now(), trackId: tile.trackId };
    }
    if (first !== null && visible && frames - first.frames >= growth) {
      const secs = (Date.now() - first.at) / 1000;
      const value = {
        trackId: tile.trackId,
        framesDecoded: frames,
        growth: frames - first.frames,
        fps: secs > 0 ? (frames - first.frames) / secs : 0,
        width: tile.frameWidth ?? 0,
        height: tile.frameHeight ?? 0,
        waitedMs: Date.now() - started,
      };
      if (dom) Object.assign(value, { domTrackId: dom.trackId, stage: dom.stage === 'true' });
      return { ok: true, value };
    }
    return {
      ok: false,
      last: { tile, domTiles: shown ? v.tiles : undefined, state: v.state, error: v.error, statsError: v.statsError },
    };
  });
}

/** Ends a scenario's browser: its overall timer, the context (if it opened), its profile. */
export async function closeBrowser(ctx, profile, overall) {
  clearTimeout(overall);
  if (ctx) await ctx.close().catch((e) => console.error(`closing the browser: ${e}`));
  fs.rmSync(profile, { recursive: true, force: true });
}

/** Runs a scenario's `main`; a failure before it could report becomes a `setup` result. */
export function runMain(main) {
  main().catch((e) => {
    emit({ event: 'result', ok: false, stage: 'setup', reason: String(e?.stack ?? e) });
    process.exit(1);
  });
}

/**
 * Headless Chromium with the checked flags (plus `extraArgs`) on the throw-away `profile`;
 * `options` go to Playwright as they are (viewport, signal handling).
 */
export function launchChromium(profile, executablePath, { extraArgs = [], ...options } = {}) {
  return chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...extraArgs],
    ...options,
  });
}

/**
 * The scenario's deadline: after `seconds` the result so far is emitted as failed at the stage
 * `stage()` names, and the process exits.
 */
export function overallTimeout(result, stage, seconds) {
  return setTimeout(() => {
    emit({ ...result, ok: false, stage: stage(), reason: `overall timeout of ${seconds} s` });
    process.exit(1);
  }, seconds * 1000);
}

/**
 * Marks `result` failed by `error` (at its own stage, else `stage`), with `describe(page)` of
 * every page still open in `pages` ({who: page}) as diagnostics.
 */
export async function recordFailure(result, error, stage, pages, describe) {
  result.ok = false;
  result.stage = error.stage ?? stage;
  result.reason = error.message ?? String(error);
  result.diagnostics = {};
  for (const [who, page] of Object.entries(pages)) {
    if (!page || page.isClosed()) continue;
    try {
      result.diagnostics[who] = await describe(page);
    } catch (err) {
      result.diagnostics[who] = { snapshotError: String(err) };
    }
  }
}
