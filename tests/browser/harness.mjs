// Owns: what the browser scenarios (two_pages.mjs, failover.mjs) share — the Chromium flags
// checked on this machine kind, JSON-lines output, and polling a page until a condition holds
// with a stage-tagged error when it does not.

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
