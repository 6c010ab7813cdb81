// Owns: the headless-Chromium failover scenario of Kaskade's web client — page A joins a room on
// one node, page B the same room on another node (camera + microphone on); once each decodes the
// other's camera the script watches both pages every --poll-ms while the test disrupts the mesh
// (kill -9 of a node, a maintenance drain, …) and reports how the pages came through: moves to
// another node, error banners, and the longest stall of the remote video. Run (inside a network
// namespace, like two_pages.mjs) by the mesh failover tests; it never touches the nodes itself.
//
// Usage: node failover.mjs --url http://HOST1:PORT --room ROOM [--url2 http://HOST2:PORT]
//          [--kill-wait SECONDS] [--settle SECONDS] [--poll-ms MS] [--ready-timeout SECONDS]
//          [--timeout SECONDS] [--artifacts DIR] [--chromium /usr/bin/chromium]
//   --url / --url2   page A opens --url, page B --url2 (default: --url); each a node's HTTP origin
//   --kill-wait      longest watch after "ready" (default 90 s); then the result is printed
//   --settle         if > 0: end by itself once every page stalled (>= 300 ms, after the mark if
//                    one was given) and its frames then grew for this many seconds (default 0: off)
//   --poll-ms        sampling period of the watch (default 50)
//   --ready-timeout  limit for joining and first decoded frames (default 60 s)
//   --timeout        hard limit of the whole run (default 300 s)
//
// Protocol (stdout: one JSON object per line; stderr: page console and diagnostics):
//   1. {"event":"ready","t":0,"ids":{"a":PID,"b":PID},"nodes":{"a":WSURL,"b":WSURL},"names":{…},
//       "wall_ms":EPOCH_MS}
//      Both pages are joined and each decodes the other's camera. Disrupt the mesh after this.
//   2. Every --poll-ms: {"event":"frames","t":MS_SINCE_READY,"a":N,"b":N,"a_node":WSURL,
//       "b_node":WSURL,"a_error":null|TEXT,"b_error":null|TEXT,"a_reconnects":N,"b_reconnects":N,
//       "a_moving":null|"lost"|"drain","b_moving":…,"a_state":…,"b_state":…}
//      `a` = remote camera frames page A decoded since the start (summed over its camera tiles and
//      accumulated across receivers: a tile's counter restarting after a move does not go
//      backwards), `b` likewise for page B. `*_node` is `window.kaskade.nodeUrl()`, `*_error` the
//      visible error banner's text.
//   3. Commands, on stdin (one per line) or as signals to this process (not its group):
//        mark [LABEL]  | SIGUSR1  the disruption happens now: gap_ms then considers only stalls
//                                 that end after this moment; echoed as {"event":"mark",…}
//        done          | SIGUSR2, SIGTERM, SIGINT  print the result and exit
//      End of stdin is ignored (a test harness may give /dev/null): --kill-wait or --settle then end
//      the watch. SIGTERM to the whole process group (the harness's stop()) also kills Chromium;
//      the result is computed from the samples taken so far, so it is still printed.
//   4. {"event":"result","ok":BOOL,"ended_by":"done"|"signal"|"kill-wait"|"settled",
//       "mark_t":MS|null,"samples":N,"ids":…,
//       "a":{"reconnects":N,"node_url":WSURL,"node_url_initial":WSURL,"participant_id":PID,
//            "participant_id_initial":PID,"same_participant":BOOL,"error_visible":BOOL,
//            "error_text":TEXT|null,"state":"joined"|…,"moving":…,"frames_total":N,
//            "gap_ms":MS,"stall_start_t":MS,"stall_end_t":MS|null,"resumed":BOOL,
//            "recovery_ms":MS|null,"first_frame_ms":MS|null,"stalls_over_300ms":N},
//       "b":{…}}
//      gap_ms: the longest interval between two consecutive samples whose frame count grew
//      (after the mark, if any) — i.e. from the last sample before the video stopped to the
//      first sample after it moved again; if the video is still stopped at the end, the time
//      since it stopped (and resumed = false). recovery_ms: mark → the end of that stall.
//      first_frame_ms: the page's own measure, firstFrameAfterReconnectAt − reconnectStartedAt
//      (null when the page did not move). ok = both pages joined, no error banner, video resumed.
//      Setup failures print {"event":"result","ok":false,"stage":…,"reason":…} and exit 1.
// FAILOVER_DEBUG=1 in the environment adds each page's camera tiles to the "frames" lines.
// Exit code: 0 when the result is printed (whatever `ok` says; the caller asserts), 1 on failure
// before "ready" or an internal error.

import { emit, launchChromium, sleep, StageError, until } from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

function parseArgs(argv) {
  const out = {
    url: null,
    url2: null,
    room: null,
    artifacts: null,
    chromium: null,
    timeout: 300,
    'ready-timeout': 60,
    'kill-wait': 90,
    settle: 0,
    'poll-ms': 50,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out) || argv[i + 1] === undefined) throw new Error(`unknown option or missing value: ${argv[i]}`);
    out[key] = argv[i + 1];
  }
  if (!out.url || !out.room) throw new Error('--url and --room are required');
  out.url = out.url.replace(/\/+$/, '');
  out.url2 = out.url2 ? out.url2.replace(/\/+$/, '') : out.url;
  for (const k of ['timeout', 'ready-timeout', 'kill-wait', 'settle', 'poll-ms']) {
    out[k] = Number(out[k]);
    if (!Number.isFinite(out[k]) || out[k] < 0) throw new Error(`--${k} must be a non-negative number`);
  }
  out.chromium = out.chromium || process.env.KASKADE_CHROMIUM || '/usr/bin/chromium';
  return out;
}

const STALL_MIN_MS = 300; // a stall at least this long counts as "the video stopped" for --settle
const RESUMED_WITHIN_MS = 1000; // video counts as resumed if it grew this recently at the end
const WHO = ['a', 'b'];

/** What the watch needs from one page, cheaply (one evaluate per sample). */
async function probe(page) {
  return page.evaluate(async () => {
    const k = window.kaskade;
    const banner = document.querySelector('#error-banner');
    let tiles = [];
    let statsError = null;
    try {
      tiles = k && typeof k.stats === 'function' ? (await k.stats()).tiles : [];
    } catch (e) {
      statsError = String(e);
    }
    return {
      state: document.body?.dataset?.state ?? null,
      status: document.querySelector('#status')?.textContent?.trim() ?? null,
      error: banner && !banner.hidden ? banner.textContent.trim() : null,
      node: k && typeof k.nodeUrl === 'function' ? k.nodeUrl() : null,
      pid: k ? k.participantId : null,
      reconnects: k && typeof k.reconnects === 'number' ? k.reconnects : 0,
      moving: k ? (k.moving ?? null) : null,
      reconnectStartedAt: k ? (k.reconnectStartedAt ?? null) : null,
      firstFrameAt: k ? (k.firstFrameAfterReconnectAt ?? null) : null,
      participants: [...document.querySelectorAll('#participants li[data-participant-id]')].map((li) => ({
        id: li.dataset.participantId,
        text: li.textContent.trim(),
      })),
      tiles: tiles.map((t) => ({
        key: `${t.trackId}|${t.mediaGeneration ?? 0}`,
        participantId: t.participantId,
        source: t.source,
        frames: t.framesDecoded ?? 0,
        stale: !!t.stale,
      })),
      statsError,
    };
  });
}

/** Remote camera frames decoded by one page, accumulated across receivers (never decreasing). */
class FrameCounter {
  constructor() {
    this.last = new Map(); // tile key -> frames at the previous sample
    this.total = 0;
  }

  add(tiles) {
    let grew = 0;
    const seen = new Map();
    for (const t of tiles) {
      if (t.source !== 'camera') continue;
      const before = this.last.get(t.key) ?? 0;
      if (t.frames > before) grew += t.frames - before;
      seen.set(t.key, Math.max(before, t.frames));
    }
    this.last = seen;
    this.total += grew;
    return grew;
  }
}

/**
 * The stall statistics of one page from its samples [{t, grew}]: the longest interval between
 * two consecutive growing samples whose end is after `markT` (or the ongoing stall at the end).
 */
function stallStats(samples, markT) {
  const after = (t) => markT === null || t > markT;
  let lastGrowth = null;
  let best = null;
  let stallsOver = 0;
  for (const s of samples) {
    if (s.grew <= 0) continue;
    if (lastGrowth !== null && after(s.t)) {
      const len = s.t - lastGrowth;
      if (len >= STALL_MIN_MS) stallsOver += 1;
      if (best === null || len > best.len) best = { len, start: lastGrowth, end: s.t };
    }
    lastGrowth = s.t;
  }
  const endT = samples.length ? samples[samples.length - 1].t : 0;
  const ongoing = lastGrowth === null ? endT : endT - lastGrowth;
  const resumed = lastGrowth !== null && ongoing < RESUMED_WITHIN_MS;
  if (!resumed && (best === null || ongoing >= best.len)) {
    best = { len: ongoing, start: lastGrowth ?? 0, end: null };
  }
  return {
    gap_ms: best ? Math.round(best.len) : 0,
    stall_start_t: best ? Math.round(best.start) : null,
    stall_end_t: best && best.end !== null ? Math.round(best.end) : null,
    resumed,
    recovery_ms: markT !== null && best && best.end !== null ? Math.round(best.end - markT) : null,
    stalls_over_300ms: stallsOver,
  };
}

async function participantIdByName(stage, page, name, timeoutMs) {
  return until(stage, `a participant named ${name}`, timeoutMs, async () => {
    const s = await probe(page);
    const p = s.participants.find((p) => p.text.includes(name));
    return p ? { ok: true, value: p.id } : { ok: false, last: { participants: s.participants, state: s.state } };
  });
}

/** Waits until `page` decodes `growth` more frames of `participantId`'s camera than first seen. */
async function cameraGrowing(stage, page, participantId, growth, timeoutMs) {
  let base = null;
  return until(stage, `the camera of ${participantId} decoding ${growth} frames`, timeoutMs, async () => {
    const s = await probe(page);
    const frames = s.tiles
      .filter((t) => t.participantId === participantId && t.source === 'camera')
      .reduce((n, t) => n + t.frames, 0);
    if (base === null && frames > 0) base = frames;
    if (base !== null && frames >= base + growth) return { ok: true, value: frames };
    return { ok: false, last: { tiles: s.tiles, state: s.state, error: s.error, statsError: s.statsError } };
  });
}

/** Commands from stdin lines and signals, as a queue the watch loop drains. */
function commandSource() {
  const queue = [];
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, ...rest] = line.trim().split(/\s+/);
    if (cmd === 'mark' || cmd === 'done') queue.push({ cmd, label: rest.join(' ') || null, via: 'stdin' });
    else if (cmd) console.error(`failover.mjs: ignoring stdin line ${JSON.stringify(line)}`);
  });
  rl.on('close', () => console.error('failover.mjs: stdin closed (ignored; --kill-wait / --settle end the watch)'));
  process.on('SIGUSR1', () => queue.push({ cmd: 'mark', label: 'SIGUSR1', via: 'signal' }));
  for (const sig of ['SIGUSR2', 'SIGTERM', 'SIGINT']) {
    process.on(sig, () => queue.push({ cmd: 'done', label: sig, via: 'signal' }));
  }
  return queue;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const commands = commandSource();
  const artifacts = opts.artifacts ? path.resolve(opts.artifacts) : null;
  if (artifacts) fs.mkdirSync(artifacts, { recursive: true });
  const tag = Math.random().toString(36).slice(2, 7);
  const names = { a: `Alice-${tag}`, b: `Bob-${tag}` };
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const pages = {};
  let ctx = null;
  let stage = 'launch';
  let exitCode = 1;

  const shoot = async (label) => {
    if (!artifacts) return;
    for (const [who, page] of Object.entries(pages)) {
      try {
        await page.screenshot({ path: path.join(artifacts, `failover-${who}-${label}.png`), timeout: 3000 });
      } catch (e) {
        console.error(`screenshot ${who}-${label} failed: ${e}`);
      }
    }
  };

  const overall = setTimeout(() => {
    emit({ event: 'result', ok: false, room: opts.room, stage, reason: `overall timeout of ${opts.timeout} s` });
    process.exit(1);
  }, opts.timeout * 1000);

  try {
    ctx = await launchChromium(profile, opts.chromium, {
      viewport: { width: 1280, height: 800 },
      // The watch ends on SIGTERM/SIGINT itself; Playwright must not close the browser first.
      handleSIGTERM: false,
      handleSIGINT: false,
      handleSIGHUP: false,
    });
    pages.a = ctx.pages()[0] ?? (await ctx.newPage());
    pages.b = await ctx.newPage();
    for (const [who, page] of Object.entries(pages)) {
      page.on('console', (m) => console.error(`[${who}] ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => console.error(`[${who}] pageerror: ${e}`));
    }

    stage = 'join';
    const readyMs = opts['ready-timeout'] * 1000;
    const urls = { a: opts.url, b: opts.url2 };
    for (const who of WHO) {
      const q = new URLSearchParams({ room: opts.room, name: names[who], autojoin: '1' });
      await pages[who].goto(`${urls[who]}/?${q}`, { timeout: 20000 });
    }
    for (const who of WHO) {
      await until(stage, `page ${who} in state joined`, readyMs, async () => {
        const s = await probe(pages[who]);
        if (s.state === 'error') throw new StageError(stage, `page ${who} is in state error: ${s.error ?? s.status}`);
        return s.state === 'joined' ? { ok: true } : { ok: false, last: { state: s.state, status: s.status, error: s.error } };
      });
    }

    stage = 'participants';
    const ids = {};
    [ids.b, ids.a] = await Promise.all([
      participantIdByName(stage, pages.a, names.b, readyMs),
      participantIdByName(stage, pages.b, names.a, readyMs),
    ]);

    stage = 'camera';
    await Promise.all([
      cameraGrowing(stage, pages.a, ids.b, 30, readyMs),
      cameraGrowing(stage, pages.b, ids.a, 30, readyMs),
    ]);
    await shoot('ready');

    // ---- watch ----------------------------------------------------------------------------
    stage = 'watch';
    const first = {};
    for (const who of WHO) first[who] = await probe(pages[who]);
    const counters = { a: new FrameCounter(), b: new FrameCounter() };
    for (const who of WHO) counters[who].add(first[who].tiles);
    const t0 = performance.now();
    const now = () => performance.now() - t0;
    emit({
      event: 'ready',
      t: 0,
      ids,
      nodes: { a: first.a.node, b: first.b.node },
      names,
      wall_ms: Date.now(),
    });

    const samples = { a: [], b: [] };
    const last = { a: first.a, b: first.b };
    let markT = null;
    let endedBy = null;
    const pollMs = opts['poll-ms'];
    const killWaitMs = opts['kill-wait'] * 1000;
    const settleMs = opts.settle * 1000;

    while (endedBy === null) {
      const started = performance.now();
      for (const c of commands.splice(0)) {
        if (c.cmd === 'mark') {
          markT = now();
          emit({ event: 'mark', t: Math.round(markT), label: c.label, via: c.via });
        } else if (endedBy === null) {
          endedBy = c.via === 'signal' ? 'signal' : 'done';
        }
      }
      if (endedBy !== null) break;
      if (now() >= killWaitMs) {
        endedBy = 'kill-wait';
        break;
      }
      const results = await Promise.all(
        WHO.map((who) => probe(pages[who]).then((r) => r, (e) => ({ probeError: String(e).split('\n')[0] }))),
      );
      const t = now();
      const line = { event: 'frames', t: Math.round(t) };
      WHO.forEach((who, i) => {
        const r = results[i];
        const grew = r.probeError ? 0 : counters[who].add(r.tiles);
        if (!r.probeError) last[who] = r;
        samples[who].push({ t, grew });
        line[who] = counters[who].total;
        line[`${who}_node`] = last[who].node;
        line[`${who}_error`] = r.probeError ? `probe failed: ${r.probeError}` : r.error;
        line[`${who}_reconnects`] = last[who].reconnects;
        line[`${who}_moving`] = last[who].moving;
        line[`${who}_state`] = last[who].state;
        if (process.env.FAILOVER_DEBUG) line[`${who}_tiles`] = r.tiles;
      });
      emit(line);
      if (settleMs > 0 && WHO.every((who) => settledAfterStall(samples[who], markT, settleMs))) {
        endedBy = 'settled';
        break;
      }
      await sleep(Math.max(0, pollMs - (performance.now() - started)));
    }

    // ---- result (from the samples only: Chromium may be gone already after a group SIGTERM) ---
    const result = { event: 'result', ok: true, ended_by: endedBy, room: opts.room, names, ids };
    result.mark_t = markT === null ? null : Math.round(markT);
    result.samples = samples.a.length;
    result.duration_ms = Math.round(now());
    const reasons = [];
    for (const who of WHO) {
      const l = last[who];
      const st = stallStats(samples[who], markT);
      const firstFrame =
        l.reconnects > 0 && l.firstFrameAt !== null && l.reconnectStartedAt !== null
          ? Math.round(l.firstFrameAt - l.reconnectStartedAt)
          : null;
      result[who] = {
        reconnects: l.reconnects,
        node_url: l.node,
        node_url_initial: first[who].node,
        participant_id: l.pid,
        participant_id_initial: first[who].pid,
        same_participant: l.pid === first[who].pid,
        error_visible: l.error !== null,
        error_text: l.error,
        state: l.state,
        status: l.status,
        moving: l.moving,
        frames_total: counters[who].total,
        ...st,
        first_frame_ms: firstFrame,
      };
      if (l.state !== 'joined') reasons.push(`page ${who} is in state ${l.state}`);
      if (l.error !== null) reasons.push(`page ${who} shows an error: ${l.error}`);
      if (!st.resumed) reasons.push(`page ${who}'s remote video did not resume (stalled ${st.gap_ms} ms)`);
    }
    result.ok = reasons.length === 0;
    if (!result.ok) result.reason = reasons.join('; ');
    if (endedBy !== 'signal') await shoot('end');
    emit(result);
    exitCode = 0;
  } catch (e) {
    const result = { event: 'result', ok: false, room: opts.room, names, stage: e.stage ?? stage, reason: e.message ?? String(e) };
    result.diagnostics = {};
    for (const [who, page] of Object.entries(pages)) {
      try {
        result.diagnostics[who] = await probe(page);
      } catch (err) {
        result.diagnostics[who] = { probeError: String(err) };
      }
    }
    await shoot('failure');
    emit(result);
    exitCode = 1;
  } finally {
    clearTimeout(overall);
    if (ctx) await Promise.race([ctx.close().catch((e) => console.error(`closing the browser: ${e}`)), sleep(5000)]);
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.exit(exitCode);
}

/** True once the page's video stalled (>= STALL_MIN_MS, after the mark) and then grew for `settleMs`. */
function settledAfterStall(samples, markT, settleMs) {
  let lastGrowth = null;
  let resumedAt = null;
  for (const s of samples) {
    if (s.grew <= 0) continue;
    if (lastGrowth !== null && s.t - lastGrowth >= STALL_MIN_MS && (markT === null || s.t > markT)) resumedAt = s.t;
    lastGrowth = s.t;
  }
  if (resumedAt === null || lastGrowth === null) return false;
  const endT = samples[samples.length - 1].t;
  return endT - resumedAt >= settleMs && endT - lastGrowth < RESUMED_WITHIN_MS;
}

main().catch((e) => {
  emit({ event: 'result', ok: false, stage: 'setup', reason: String(e?.stack ?? e) });
  process.exit(1);
});
