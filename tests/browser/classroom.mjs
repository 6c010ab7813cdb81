// Owns: the headless-Chromium classroom scenario of Kaskade's web client — a teacher page joins
// a room first (and becomes its host), turns on "only hosts publish" and publishes camera and
// microphone; a student page joins with `?role=audience`, watches the teacher, cannot publish
// (no controls; a publish forced through the page's code path is refused by the node as
// `forbidden`), sees the audience count and raises its hand; the teacher lets it speak from the
// hand queue, the student publishes its camera and the teacher decodes it; "Mute all" mutes the
// student (not the teacher) until it unmutes itself; the teacher moves the student back to the
// audience, the student's publishing stops and its tile at the teacher goes; finally the teacher
// removes the student, whose page shows it and does not reconnect.
// Prints JSON lines (stage events and one final `result`); exits 1 with a reason on failure.
// Screenshots go to --artifacts (classroom-teacher-*.png, classroom-student-*.png). Run by
// tests/tests/e2e_browser_classroom.rs inside a network namespace.
//
// Usage: node classroom.mjs --url http://127.0.0.1:PORT --room ROOM [--artifacts DIR]
//                           [--timeout SECONDS] [--chromium /usr/bin/chromium]

import { chromium } from 'playwright-core';
import { CHROMIUM_FLAGS, emit, StageError, until, parseOptions } from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function parseArgs(argv) {
  return parseOptions(argv, { timeout: 150 });
}

/** What the page shows and knows: state, role, controls, lists, tiles with their stats. */
async function snapshot(page) {
  return page.evaluate(async () => {
    const k = window.kaskade;
    const text = (sel) => document.querySelector(sel)?.textContent?.trim() ?? null;
    // A control is usable when it is rendered (not hidden, in the layout) and enabled.
    const usable = (sel) => {
      const el = document.querySelector(sel);
      return !!el && !el.hidden && el.offsetParent !== null && !el.disabled;
    };
    const banner = document.querySelector('#error-banner');
    let stats = null;
    let statsError = null;
    try {
      stats = await k.stats();
    } catch (e) {
      statsError = String(e);
    }
    const pc = k?.publishPc ?? null;
    return {
      state: document.body?.dataset?.state ?? null,
      status: text('#status'),
      error: banner && !banner.hidden ? banner.textContent.trim() : null,
      role: k?.role ?? null,
      settings: k?.settings ?? null,
      audience: k?.audience ?? null,
      handRaised: k?.handRaised ?? null,
      receiveQuality: k?.receiveQuality ?? null,
      publishPc: pc ? pc.connectionState : null,
      publishedTracks: k?.publishedTracks ?? {},
      liveLocalTracks: k ? k.liveLocalTracks() : [],
      classroom: document.querySelector('#call-view')?.dataset?.classroom ?? null,
      audienceCount: (() => {
        const el = document.querySelector('#audience-count');
        return el && !el.hidden ? el.textContent.trim() : null;
      })(),
      controls: {
        mic: usable('#mute-mic'),
        cam: usable('#toggle-cam'),
        screen: usable('#share-screen'),
        raiseHand: usable('#raise-hand'),
        raiseHandLabel: text('#raise-hand .label'),
        hostPanel: usable('#only-hosts-publish'),
      },
      participants: [...document.querySelectorAll('#participants li[data-participant-id]')].map((li) => ({
        id: li.dataset.participantId,
        role: li.dataset.role,
        text: li.textContent.trim(),
      })),
      hands: [...document.querySelectorAll('#hand-queue li[data-hand-id]')].map((li) => li.dataset.handId),
      tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => ({
        participantId: t.dataset.participantId,
        source: t.dataset.source,
        trackId: t.dataset.trackId,
        stage: t.dataset.stage,
        quality: t.querySelector('.tile-quality')?.textContent ?? '',
        hasVideo: !!t.querySelector('video'),
      })),
      stats,
      statsError,
    };
  });
}

async function joined(stage, page, who, role) {
  return until(stage, `${who} joined as ${role}`, 20000, async () => {
    const s = await snapshot(page);
    if (s.state === 'error' || s.state === 'removed') {
      throw new StageError(stage, `${who} is in state ${s.state}: ${s.error ?? s.status}`);
    }
    return s.state === 'joined' && s.role === role
      ? { ok: true, value: s }
      : { ok: false, last: { state: s.state, role: s.role, status: s.status, error: s.error } };
  });
}

/** Waits until `page` lists a participant whose entry shows `name`; returns that id. */
async function participantIdByName(stage, page, name, timeoutMs) {
  return until(stage, `a participant named ${name}`, timeoutMs, async () => {
    const s = await snapshot(page);
    const p = s.participants.find((p) => p.text.includes(name));
    return p ? { ok: true, value: p.id } : { ok: false, last: { participants: s.participants, state: s.state } };
  });
}

/** Waits until the camera tile of `participantId` decodes `growth` more frames than when first seen. */
async function framesGrowing(stage, page, participantId, growth, timeoutMs) {
  const started = Date.now();
  let base = null;
  return until(stage, `camera tile of ${participantId} decoding ${growth} more frames`, timeoutMs, async () => {
    const s = await snapshot(page);
    const tile = (s.stats?.tiles ?? []).find((t) => t.participantId === participantId && t.source === 'camera');
    const dom = s.tiles.find((t) => t.participantId === participantId && t.source === 'camera' && t.hasVideo);
    const frames = tile?.framesDecoded ?? 0;
    if (tile && dom && frames > 0 && (base === null || tile.trackId !== base.trackId)) {
      base = { frames, at: Date.now(), trackId: tile.trackId };
    }
    if (base !== null && frames >= base.frames + growth && dom) {
      const secs = (Date.now() - base.at) / 1000;
      return {
        ok: true,
        value: {
          trackId: tile.trackId,
          framesDecoded: frames,
          growth: frames - base.frames,
          fps: secs > 0 ? (frames - base.frames) / secs : 0,
          width: tile.frameWidth ?? 0,
          height: tile.frameHeight ?? 0,
          stage: dom.stage === 'true',
          waitedMs: Date.now() - started,
        },
      };
    }
    return { ok: false, last: { tiles: s.stats?.tiles, domTiles: s.tiles, state: s.state, error: s.error } };
  });
}

/** The publish controls a page must not offer to the audience. */
function publishControls(s) {
  return { mic: s.controls.mic, cam: s.controls.cam, screen: s.controls.screen };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const artifacts = opts.artifacts ? path.resolve(opts.artifacts) : null;
  if (artifacts) fs.mkdirSync(artifacts, { recursive: true });
  const tag = Math.random().toString(36).slice(2, 7);
  const names = { teacher: `Teacher-${tag}`, student: `Student-${tag}` };
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const result = { event: 'result', ok: false, room: opts.room, names };
  const started = Date.now();
  let ctx = null;
  const pages = {};
  let stage = 'launch';
  const step = (name, extra) => emit({ event: 'stage', stage: name, at_ms: Date.now() - started, ...extra });

  const shoot = async (label) => {
    if (!artifacts) return;
    for (const [who, page] of Object.entries(pages)) {
      try {
        await page.screenshot({ path: path.join(artifacts, `classroom-${who}-${label}.png`) });
      } catch (e) {
        console.error(`screenshot ${who}-${label} failed: ${e}`);
      }
    }
  };

  const overall = setTimeout(async () => {
    emit({ ...result, ok: false, stage, reason: `overall timeout of ${opts.timeout} s` });
    process.exit(1);
  }, opts.timeout * 1000);

  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1280, height: 800 },
    });
    pages.teacher = ctx.pages()[0] ?? (await ctx.newPage());
    for (const [who, page] of Object.entries(pages)) {
      page.on('console', (m) => console.error(`[${who}] ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => console.error(`[${who}] pageerror: ${e}`));
    }
    const { teacher } = pages;

    // The teacher is first in the room: the node makes it the host.
    stage = 'teacher-join';
    const tq = new URLSearchParams({ room: opts.room, name: names.teacher, autojoin: '1' });
    await teacher.goto(`${opts.url}/?${tq}`, { timeout: 20000 });
    await joined(stage, teacher, 'teacher', 'host');
    step(stage);

    stage = 'classroom-on';
    await until(stage, 'the host panel on the teacher page', 10000, async () => {
      const s = await snapshot(teacher);
      return s.controls.hostPanel ? { ok: true } : { ok: false, last: s.controls };
    });
    await teacher.click('#only-hosts-publish');
    await until(stage, 'the room in classroom mode at the teacher', 10000, async () => {
      const s = await snapshot(teacher);
      return s.settings?.only_hosts_publish === true && s.classroom === 'true'
        ? { ok: true }
        : { ok: false, last: { settings: s.settings, classroom: s.classroom, error: s.error } };
    });
    step(stage);

    stage = 'teacher-publish';
    result.teacher_published = await until(stage, 'the teacher publishing camera and microphone', 20000, async () => {
      const s = await snapshot(teacher);
      const sources = Object.values(s.publishedTracks);
      return sources.includes('camera') && sources.includes('microphone')
        ? { ok: true, value: s.publishedTracks }
        : { ok: false, last: { published: s.publishedTracks, pc: s.publishPc, error: s.error } };
    });
    step(stage);

    // The student opens the room as audience.
    stage = 'student-join';
    pages.student = await ctx.newPage();
    const { student } = pages;
    student.on('console', (m) => console.error(`[student] ${m.type()}: ${m.text()}`));
    student.on('pageerror', (e) => console.error(`[student] pageerror: ${e}`));
    const sq = new URLSearchParams({ room: opts.room, name: names.student, role: 'audience', autojoin: '1' });
    await student.goto(`${opts.url}/?${sq}`, { timeout: 20000 });
    await joined(stage, student, 'student', 'audience');
    step(stage);

    stage = 'participants';
    const ids = {};
    [ids.teacher, ids.student] = await Promise.all([
      participantIdByName(stage, student, names.teacher, 20000),
      participantIdByName(stage, teacher, names.student, 20000),
    ]);
    result.ids = ids;

    stage = 'student-sees-teacher';
    result.student_sees_teacher = await framesGrowing(stage, student, ids.teacher, 30, 30000);
    if (!result.student_sees_teacher.stage) {
      throw new StageError(stage, "the teacher's camera is not on the student's stage");
    }
    step(stage, { growth: result.student_sees_teacher.growth });

    stage = 'student-cannot-publish';
    {
      const s = await snapshot(student);
      result.student_audience = {
        controls: s.controls,
        publishPc: s.publishPc,
        liveLocalTracks: s.liveLocalTracks,
        classroom: s.classroom,
      };
      const offered = Object.entries(publishControls(s)).filter(([, v]) => v);
      if (offered.length) throw new StageError(stage, `the audience page offers publish controls: ${JSON.stringify(s.controls)}`);
      if (!s.controls.raiseHand) throw new StageError(stage, `no usable raise-hand button: ${JSON.stringify(s.controls)}`);
      if (s.publishPc !== null) throw new StageError(stage, `the audience page has a publish connection (${s.publishPc})`);
      if (s.liveLocalTracks.length) throw new StageError(stage, `the audience page holds live local media: ${s.liveLocalTracks}`);
      if (s.participants.some((p) => p.id === ids.student && p.role !== 'audience')) {
        throw new StageError(stage, `the student lists itself with another role: ${JSON.stringify(s.participants)}`);
      }
    }

    // Publishing through the page's own code path anyway: the node must refuse it.
    stage = 'forced-publish';
    const forced = await student.evaluate(() => window.kaskade.publish());
    if (forced !== true) throw new StageError(stage, 'kaskade.publish() did not start');
    result.forced_publish = await until(stage, 'the node to refuse the forced publish', 20000, async () => {
      const s = await snapshot(student);
      const refused = (s.error ?? '').includes('forbidden');
      return refused && s.publishPc === null && s.liveLocalTracks.length === 0
        ? { ok: true, value: { error: s.error, state: s.state, role: s.role } }
        : { ok: false, last: { error: s.error, publishPc: s.publishPc, live: s.liveLocalTracks, state: s.state } };
    });
    if (result.forced_publish.state !== 'joined') throw new StageError(stage, `the student left the room: ${JSON.stringify(result.forced_publish)}`);
    {
      const t = await snapshot(teacher);
      if (t.tiles.some((x) => x.participantId === ids.student)) throw new StageError(stage, 'the teacher shows a tile of the audience member');
    }
    step(stage);

    stage = 'audience-count';
    result.audience_count = {};
    for (const who of ['student', 'teacher']) {
      result.audience_count[who] = await until(stage, `${who} showing 1 in the audience`, 15000, async () => {
        const s = await snapshot(pages[who]);
        return s.audience === 1 && /\b1 in the audience/.test(s.audienceCount ?? '')
          ? { ok: true, value: s.audienceCount }
          : { ok: false, last: { audience: s.audience, text: s.audienceCount } };
      });
    }
    await shoot('audience');
    step(stage);

    stage = 'raise-hand';
    await student.click('#raise-hand');
    await until(stage, 'the student hand shown raised', 10000, async () => {
      const s = await snapshot(student);
      return s.handRaised && s.controls.raiseHandLabel === 'Lower hand' ? { ok: true } : { ok: false, last: s.controls };
    });
    const handAt = Date.now();
    result.hand_queue = await until(stage, "the student in the teacher's hand queue", 10000, async () => {
      const s = await snapshot(teacher);
      return s.hands.includes(ids.student) ? { ok: true, value: s.hands } : { ok: false, last: s.hands };
    });
    result.hand_seen_ms = Date.now() - handAt;
    await shoot('hand');
    step(stage);

    stage = 'let-speak';
    const promotedAt = Date.now();
    await teacher.click(`#hand-queue li[data-hand-id="${ids.student}"] button.let-speak`);
    result.student_promoted = await until(stage, 'the student to become a speaker with publish controls', 20000, async () => {
      const s = await snapshot(student);
      const sources = Object.values(s.publishedTracks);
      return s.role === 'speaker' && s.controls.mic && s.controls.cam && !s.controls.raiseHand && sources.includes('camera')
        ? { ok: true, value: { controls: s.controls, published: s.publishedTracks, ms: Date.now() - promotedAt } }
        : { ok: false, last: { role: s.role, controls: s.controls, published: s.publishedTracks, error: s.error } };
    });
    {
      const t = await snapshot(teacher);
      result.hand_queue_after = t.hands;
      if (t.hands.includes(ids.student)) {
        // The node lowers the hand of a promoted participant; the queue follows at once.
        await until(stage, 'the hand queue without the student', 5000, async () => {
          const s = await snapshot(teacher);
          return s.hands.includes(ids.student) ? { ok: false, last: s.hands } : { ok: true };
        });
      }
    }
    step(stage);

    stage = 'teacher-sees-student';
    result.teacher_sees_student = await framesGrowing(stage, teacher, ids.student, 30, 30000);
    result.teacher_sees_student.sincePromotionMs = Date.now() - promotedAt;
    await shoot('speaking');
    step(stage, { growth: result.teacher_sees_student.growth });

    // The per-tile indicator shows the received resolution (getStats) and the forwarded layer
    // (`receive_quality`, sent by the node at least every few seconds); the top bar shows the
    // node's bandwidth estimate.
    stage = 'quality';
    result.quality = await until(stage, "resolution and layer on the student's tile of the teacher", 15000, async () => {
      const s = await snapshot(student);
      const tile = s.tiles.find((t) => t.participantId === ids.teacher && t.source === 'camera');
      const estimate = await student.evaluate(() => {
        const el = document.querySelector('#receive-estimate');
        return el && !el.hidden ? el.textContent.trim() : null;
      });
      return tile && /\d+\u00d7\d+/.test(tile.quality) && /layer/.test(tile.quality) && estimate
        ? { ok: true, value: { indicator: tile.quality, estimate, receive_quality: s.receiveQuality } }
        : { ok: false, last: { tile: tile ?? s.tiles, estimate, receive_quality: s.receiveQuality } };
    });
    step(stage);

    // "Mute all": the node mutes every non-host microphone; the student unmutes itself.
    stage = 'mute-all';
    const micState = async (page) =>
      page.evaluate(() => ({
        pressed: document.querySelector('#mute-mic')?.getAttribute('aria-pressed'),
        label: document.querySelector('#mute-mic .label')?.textContent ?? null,
      }));
    const listedMuted = async (id) =>
      teacher.evaluate((pid) => document.querySelector(`#participants li[data-participant-id="${pid}"]`)?.dataset?.muted === 'true', id);
    await teacher.click('#mute-all');
    result.mute_all = {};
    result.mute_all.student = await until(stage, "the student's microphone muted by the host", 10000, async () => {
      const m = await micState(student);
      return m.pressed === 'true' ? { ok: true, value: m } : { ok: false, last: m };
    });
    result.mute_all.teacher_lists_muted = await until(stage, 'the teacher to list the student as muted', 10000, async () =>
      (await listedMuted(ids.student)) ? { ok: true, value: true } : { ok: false, last: false },
    );
    {
      const own = await micState(teacher);
      result.mute_all.teacher_own_mic = own;
      if (own.pressed === 'true') throw new StageError(stage, "mute all muted the host's own microphone");
    }
    await student.click('#mute-mic');
    result.mute_all.unmuted_listed = await until(stage, 'the teacher to list the student unmuted again', 10000, async () =>
      (await listedMuted(ids.student)) ? { ok: false, last: true } : { ok: true, value: true },
    );
    step(stage);

    stage = 'move-to-audience';
    const demotedAt = Date.now();
    await teacher.click(`#participants li[data-participant-id="${ids.student}"] button[data-action="audience"]`);
    result.student_demoted = await until(stage, 'the student back in the audience, publishing stopped', 20000, async () => {
      const s = await snapshot(student);
      const offered = Object.values(publishControls(s)).some(Boolean);
      return s.role === 'audience' && s.publishPc === null && s.liveLocalTracks.length === 0 && !offered && s.controls.raiseHand
        ? { ok: true, value: { ms: Date.now() - demotedAt, controls: s.controls, published: s.publishedTracks } }
        : { ok: false, last: { role: s.role, publishPc: s.publishPc, live: s.liveLocalTracks, controls: s.controls } };
    });
    result.student_tile_gone = await until(stage, "the student's tile gone at the teacher", 15000, async () => {
      const s = await snapshot(teacher);
      const tiles = s.tiles.filter((t) => t.participantId === ids.student);
      return tiles.length === 0 ? { ok: true, value: { ms: Date.now() - demotedAt } } : { ok: false, last: tiles };
    });
    {
      const t = await snapshot(teacher);
      result.teacher_lists_student_as = t.participants.find((p) => p.id === ids.student)?.role ?? null;
    }
    await shoot('demoted');
    step(stage);

    stage = 'still-joined';
    for (const who of ['teacher', 'student']) {
      const s = await snapshot(pages[who]);
      if (s.state !== 'joined') throw new StageError(stage, `${who} left state joined: ${s.state} (${s.error ?? s.status})`);
    }

    // "Remove": the student's page shows that it was removed and does not come back by itself.
    stage = 'remove';
    await teacher.click(`#participants li[data-participant-id="${ids.student}"] button[data-action="remove"]`);
    result.removed = await until(stage, 'the student page in state removed', 10000, async () => {
      const s = await snapshot(student);
      return s.state === 'removed' && (s.error ?? '').includes('removed')
        ? { ok: true, value: { state: s.state, error: s.error, status: s.status } }
        : { ok: false, last: { state: s.state, error: s.error, status: s.status } };
    });
    await until(stage, 'the student gone from the teacher list', 10000, async () => {
      const s = await snapshot(teacher);
      return s.participants.some((p) => p.id === ids.student) ? { ok: false, last: s.participants } : { ok: true };
    });
    await shoot('removed');
    await new Promise((r) => setTimeout(r, 3000));
    {
      const s = await student.evaluate(() => ({
        state: document.body.dataset.state,
        reconnects: window.kaskade.reconnects,
        moving: window.kaskade.moving,
        ws: window.kaskade.ws ? window.kaskade.ws.readyState : null,
      }));
      result.removed.after_3s = s;
      if (s.state !== 'removed' || s.reconnects !== 0 || s.moving) {
        throw new StageError(stage, `the removed student did not stay out: ${JSON.stringify(s)}`);
      }
      const t = await snapshot(teacher);
      if (t.participants.some((p) => p.id === ids.student)) throw new StageError(stage, 'the removed student is back at the teacher');
      if (t.state !== 'joined') throw new StageError(stage, `the teacher left state joined: ${t.state}`);
      result.teacher_role_at_end = t.role;
    }
    result.ok = true;
    result.elapsed_ms = Date.now() - started;
  } catch (e) {
    result.ok = false;
    result.stage = e.stage ?? stage;
    result.reason = e.message ?? String(e);
    result.diagnostics = {};
    for (const [who, page] of Object.entries(pages)) {
      try {
        result.diagnostics[who] = await snapshot(page);
      } catch (err) {
        result.diagnostics[who] = { snapshotError: String(err) };
      }
    }
    await shoot('failure');
  } finally {
    clearTimeout(overall);
    if (ctx) await ctx.close().catch((e) => console.error(`closing the browser: ${e}`));
    fs.rmSync(profile, { recursive: true, force: true });
  }
  emit(result);
  process.exit(result.ok ? 0 : 1);
}

main().catch((e) => {
  emit({ event: 'result', ok: false, stage: 'setup', reason: String(e?.stack ?? e) });
  process.exit(1);
});
