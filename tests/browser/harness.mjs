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
