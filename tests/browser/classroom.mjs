// Owns: the headless-Chromium classroom scenario of Kaskade's web client — a teacher page joins
// a room first (and becomes its host), turns on "only hosts publish" and publishes camera and
// microphone; a student page joins with `?role=audience`, watches the teacher, cannot publish
// (no controls; a publish forced through the page's code path is refused by the node as
// `forbidden`), sees the audience count and raises its hand; the teacher lets it speak from the
// hand queue, the student publishes its camera and the teacher decodes it; "Mute all" mutes the
// student (not the teacher) until it unmutes itself; the teacher moves the student back to the
// audience, the student's publishing stops and its tile at the teacher goes; the teacher locks
// the room (the student sees the Locked badge), a late student's join is refused (page state
// `locked`, still on the join form) until the teacher unlocks and it tries again; the teacher
// removes the student, whose page shows it and does not reconnect; finally the teacher ends the
// meeting for all (confirming the dialog): the late student's and the teacher's pages end (state
// `ended`), media stopped, no reconnection.
// Prints JSON lines (stage events and one final `result`); exits 1 with a reason on failure.
// Screenshots go to --artifacts (classroom-teacher-*.png, classroom-student-*.png). Run by
// tests/tests/e2e_browser_classroom.rs inside a network namespace.
//
// Usage: node classroom.mjs --url http://127.0.0.1:PORT --room ROOM [--artifacts DIR]
//                           [--timeout SECONDS] [--chromium /usr/bin/chromium]

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
  sleep,
  StageError,
  tileOf,
  until,
} from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function parseArgs(argv) {
  return parseOptions(argv, { timeout: 150 });
}

/** What the page shows and knows (harness pageView) plus the classroom's controls and lists. */
async function snapshot(page) {
  const view = await pageView(page);
  const more = await page.evaluate(() => {
    const k = window.kaskade;
    const text = (sel) => document.querySelector(sel)?.textContent?.trim() ?? null;
    // A control is usable when it is rendered (not hidden, in the layout) and enabled.
    const usable = (sel) => {
      const el = document.querySelector(sel);
      return !!el && !el.hidden && el.offsetParent !== null && !el.disabled;
    };
    const shown = (sel) => {
      const el = document.querySelector(sel);
      return el && !el.hidden && el.offsetParent !== null ? el.textContent.trim() : null;
    };
    const pc = k?.publishPc ?? null;
    return {
      audience: k?.audience ?? null,
      handRaised: k?.handRaised ?? null,
      reconnects: k?.reconnects ?? null,
      moving: k?.moving ?? null,
      ws: k?.ws ? k.ws.readyState : null,
      publishPc: pc ? pc.connectionState : null,
      publishedTracks: k?.publishedTracks ?? {},
      liveLocalTracks: k ? k.liveLocalTracks() : [],
      classroom: document.querySelector('#call-view')?.dataset?.classroom ?? null,
      audienceCount: shown('#audience-count'),
      lockedBadge: shown('#locked-label'),
      joinForm: !!document.querySelector('#join-form') && document.querySelector('#join-view')?.hidden === false,
      joinNote: text('#join-note'),
      joinButton: text('#join'),
      controls: {
        mic: usable('#mute-mic'),
        cam: usable('#toggle-cam'),
        screen: usable('#share-screen'),
        raiseHand: usable('#raise-hand'),
        raiseHandLabel: text('#raise-hand .label'),
        hostPanel: usable('#only-hosts-publish'),
        lockRoom: usable('#lock-room'),
        lockRoomLabel: text('#lock-room'),
        endMeeting: usable('#end-meeting'),
      },
      hands: [...document.querySelectorAll('#hand-queue li[data-hand-id]')].map((li) => li.dataset.handId),
    };
  });
  return { ...view, ...more };
}

/** Waits until `page` is in the room with `role` (a page in state error or removed fails). */
function joined(stage, page, who, role) {
  return joinedView(stage, page, `${who} (as ${role})`, 20000, {
    check: (v) => v.role === role,
    failStates: ['error', 'removed'],
  });
}

/** Waits until the page shows the camera tile of `participantId` decoding `growth` more frames. */
function framesGrowing(stage, page, participantId, growth, timeoutMs) {
  return decodedGrowth(stage, page, `camera tile of ${participantId}`, tileOf(participantId, 'camera'), growth, timeoutMs, {
    shown: true,
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
  const names = { teacher: `Teacher-${tag}`, student: `Student-${tag}`, late: `Late-${tag}` };
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

  /** Opens page `who` (its console logged to stderr) on the room as `names[who]`, with `extra` query. */
  const open = async (who, extra) => {
    const page = who === 'teacher' ? (ctx.pages()[0] ?? (await ctx.newPage())) : await ctx.newPage();
    pages[who] = page;
    page.on('console', (m) => console.error(`[${who}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console.error(`[${who}] pageerror: ${e}`));
    const q = new URLSearchParams({ room: opts.room, name: names[who], autojoin: '1', ...extra });
    await page.goto(`${opts.url}/?${q}`, { timeout: 20000 });
    return page;
  };

  const overall = overallTimeout(result, () => stage, opts.timeout);

  try {
    ctx = await launchChromium(profile, opts.chromium, { viewport: { width: 1280, height: 800 } });

    // The teacher is first in the room: the node makes it the host.
    stage = 'teacher-join';
    const teacher = await open('teacher', {});
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
    const student = await open('student', { role: 'audience' });
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

    // "Lock room": the student (already in) sees the Locked badge; the other setting stays.
    stage = 'lock';
    await until(stage, 'a usable "Lock room" button at the teacher', 10000, async () => {
      const s = await snapshot(teacher);
      return s.controls.lockRoom && s.controls.lockRoomLabel === 'Lock room' ? { ok: true } : { ok: false, last: s.controls };
    });
    await teacher.click('#lock-room');
    result.locked = {};
    result.locked.teacher = await until(stage, 'the room locked at the teacher', 10000, async () => {
      const s = await snapshot(teacher);
      return s.settings?.locked === true && s.controls.lockRoomLabel === 'Unlock room'
        ? { ok: true, value: { settings: s.settings, lockRoomLabel: s.controls.lockRoomLabel, badge: s.lockedBadge } }
        : { ok: false, last: { settings: s.settings, controls: s.controls, error: s.error } };
    });
    result.locked.student = await until(stage, 'the Locked badge on the student page', 10000, async () => {
      const s = await snapshot(student);
      return s.settings?.locked === true && /Locked/.test(s.lockedBadge ?? '')
        ? { ok: true, value: { settings: s.settings, badge: s.lockedBadge, state: s.state } }
        : { ok: false, last: { settings: s.settings, badge: s.lockedBadge, state: s.state } };
    });
    await shoot('locked');
    step(stage);

    // A late student is refused while the room is locked: its page stays on the join form.
    stage = 'late-join-locked';
    const late = await open('late', {});
    result.late_locked = await until(stage, 'the late student page in state locked', 20000, async () => {
      const s = await snapshot(late);
      if (s.state === 'joined' || s.state === 'error') {
        throw new StageError(stage, `the late student got in or failed while the room is locked: ${s.state} (${s.error ?? s.status})`);
      }
      return s.state === 'locked'
        ? {
            ok: true,
            value: { state: s.state, joinNote: s.joinNote, joinButton: s.joinButton, joinForm: s.joinForm, error: s.error },
          }
        : { ok: false, last: { state: s.state, status: s.status, note: s.joinNote, error: s.error } };
    });
    await sleep(2000);
    {
      const s = await snapshot(late);
      result.late_locked.after_2s = { state: s.state, reconnects: s.reconnects, liveLocalTracks: s.liveLocalTracks };
      if (s.state !== 'locked') throw new StageError(stage, `the late student page left state locked by itself: ${s.state}`);
      const t = await snapshot(teacher);
      if (t.participants.some((p) => p.text.includes(names.late))) throw new StageError(stage, 'the teacher lists the refused late student');
    }
    await shoot('late-locked');
    step(stage);

    // "Unlock room": the badge goes, the late student's "Try again" gets it in (as audience:
    // only hosts publish is still on).
    stage = 'unlock';
    await teacher.click('#lock-room');
    result.unlocked = {};
    result.unlocked.teacher = await until(stage, 'the room unlocked at the teacher', 10000, async () => {
      const s = await snapshot(teacher);
      return s.settings?.locked === false && s.controls.lockRoomLabel === 'Lock room'
        ? { ok: true, value: { settings: s.settings, lockRoomLabel: s.controls.lockRoomLabel } }
        : { ok: false, last: { settings: s.settings, controls: s.controls, error: s.error } };
    });
    result.unlocked.student = await until(stage, 'the Locked badge gone at the student', 10000, async () => {
      const s = await snapshot(student);
      return s.settings?.locked === false && s.lockedBadge === null
        ? { ok: true, value: { settings: s.settings, badge: s.lockedBadge } }
        : { ok: false, last: { settings: s.settings, badge: s.lockedBadge } };
    });
    await late.click('#join');
    {
      const s = await joined(stage, late, 'late student', 'audience');
      result.late_joined = { state: s.state, role: s.role, settings: s.settings };
    }
    ids.late = await participantIdByName(stage, teacher, names.late, 15000);
    step(stage);

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
    step(stage);

    // "End meeting for all" (confirmed in the dialog): every page still in the room ends, the
    // host's too, with media stopped and no reconnection.
    stage = 'end-meeting';
    result.ended = {};
    teacher.once('dialog', (d) => {
      result.ended.dialog = { type: d.type(), message: d.message() };
      d.accept().catch((e) => console.error(`accepting the dialog: ${e}`));
    });
    await teacher.click('#end-meeting');
    for (const who of ['late', 'teacher']) {
      result.ended[who] = await until(stage, `the ${who} page in state ended`, 10000, async () => {
        const s = await snapshot(pages[who]);
        return s.state === 'ended'
          ? { ok: true, value: { state: s.state, error: s.error, status: s.status, joinNote: s.joinNote } }
          : { ok: false, last: { state: s.state, error: s.error, status: s.status } };
      });
    }
    await shoot('ended');
    await sleep(3000);
    result.ended.after_3s = {};
    for (const who of ['late', 'teacher', 'student']) {
      const s = await snapshot(pages[who]);
      result.ended.after_3s[who] = {
        state: s.state,
        reconnects: s.reconnects,
        moving: s.moving,
        ws: s.ws,
        liveLocalTracks: s.liveLocalTracks,
      };
    }
    for (const who of ['late', 'teacher']) {
      const a = result.ended.after_3s[who];
      if (a.state !== 'ended' || a.reconnects !== 0 || a.moving || a.liveLocalTracks.length) {
        throw new StageError(stage, `the ${who} page did not stay ended: ${JSON.stringify(a)}`);
      }
    }
    step(stage);
    result.ok = true;
    result.elapsed_ms = Date.now() - started;
  } catch (e) {
    await recordFailure(result, e, stage, pages, snapshot);
    await shoot('failure');
  } finally {
    await closeBrowser(ctx, profile, overall);
  }
  emit(result);
  process.exit(result.ok ? 0 : 1);
}

runMain(main);
