// Owns: what the browser scenarios (two_pages.mjs, failover.mjs, e2ee.mjs, …) share — the Chromium flags
// checked on this machine kind, JSON-lines output, polling a page until a condition holds
// with a stage-tagged error when it does not, and reading a page's test hooks (pageView,
// decodedGrowth).

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
 * What a Kaskade page reports through its test hooks: page state, status line, the visible error
 * banner, our participant id, `kaskade.e2ee` and `kaskade.stats()`.
 */
export async function pageView(page) {
  return page.evaluate(async () => {
    const k = window.kaskade;
    const banner = document.querySelector('#error-banner');
    let stats = null;
    let statsError = null;
    try {
      stats = k ? await k.stats() : null;
    } catch (e) {
      statsError = String(e);
    }
    return {
      state: document.body?.dataset?.state ?? null,
      status: document.querySelector('#status')?.textContent?.trim() ?? null,
      error: banner && !banner.hidden ? banner.textContent.trim() : null,
      participantId: k?.participantId ?? null,
      e2ee: k?.e2ee ?? null,
      stats,
      statsError,
    };
  });
}

/**
 * Waits until the video tile `pick(tile)` selects (from `kaskade.stats().tiles`) has decoded
 * `growth` frames more than when it was first seen decoding; returns the growth, the frame rate
 * over that span and the decoded size.
 */
export async function decodedGrowth(stage, page, what, pick, growth, timeoutMs) {
  const started = Date.now();
  let first = null;
  return until(stage, `${what} decoding ${growth} more frames`, timeoutMs, async () => {
    const v = await pageView(page);
    const tile = (v.stats?.tiles ?? []).find(pick);
    const frames = tile?.framesDecoded ?? 0;
    if (first === null && frames > 0) first = { frames, at: Date.now() };
    if (first !== null && frames - first.frames >= growth) {
      const secs = (Date.now() - first.at) / 1000;
      return {
        ok: true,
        value: {
          trackId: tile.trackId,
          framesDecoded: frames,
          growth: frames - first.frames,
          fps: secs > 0 ? (frames - first.frames) / secs : 0,
          width: tile.frameWidth ?? 0,
          height: tile.frameHeight ?? 0,
          waitedMs: Date.now() - started,
        },
      };
    }
    return { ok: false, last: { tile, state: v.state, error: v.error, statsError: v.statsError } };
  });
}
