// Owns: the headless-Chromium room-protection scenario of Kaskade's web client on a node with
// access control — a teacher page (host token) joins, turns the lobby on and sets a room password
// from the host panel; a student page (participant token) is asked for the password, is told a
// wrong one is wrong, gets in with the right one and waits in the lobby (no join timeout); the
// teacher sees it in the lobby list and admits it, and the student then joins and decodes the
// teacher's camera; a guest page (invite token) gives the password, waits and is denied (state
// `denied`, no retry); the teacher removes the student with "Remove and ban" (confirming the
// dialog): the student's page shows `removed`, and reloading it ends in state `banned`. The room
// password must never show up in a page's URL, console or storage.
// Prints JSON lines (stage events and one final `result`); exits 1 with a reason on failure.
// Screenshots go to --artifacts (lobby-<page>-<label>.png). Run by
// tests/tests/e2e_browser_lobby.rs inside a network namespace.
//
// Usage: node lobby.mjs --url http://127.0.0.1:PORT --room ROOM --host-token T --student-token T
//                       --guest-token T --password P [--artifacts DIR] [--timeout SECONDS]
//                       [--chromium /usr/bin/chromium]

import {
  closeBrowser,
  decodedGrowth,
  emit,
  joinedView,
  launchChromium,
  overallTimeout,
  pageView,
  parseOptions,
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
  const opts = parseOptions(argv, {
    timeout: 150,
    'host-token': null,
    'student-token': null,
    'guest-token': null,
    password: null,
  });
  for (const k of ['host-token', 'student-token', 'guest-token', 'password']) {
    if (!opts[k]) throw new Error(`--${k} is required`);
  }
  return opts;
}

/** What the page shows and knows (harness pageView) plus the room-protection parts of it. */
async function snapshot(page) {
  const view = await pageView(page);
  const more = await page.evaluate(() => {
    const k = window.kaskade;
    const text = (sel) => document.querySelector(sel)?.textContent?.trim() ?? null;
    // Shown: rendered (not hidden, in the layout).
    const shown = (sel) => {
      const el = document.querySelector(sel);
      return !!el && !el.hidden && el.offsetParent !== null;
    };
    return {
      reconnects: k?.reconnects ?? null,
      moving: k?.moving ?? null,
      ws: k?.ws ? k.ws.readyState : null,
      lobby: k?.lobby ?? null,
      roomProtected: k?.roomProtected ?? null,
      auth: k?.auth ? { name: k.auth.name, role: k.auth.role, source: k.auth.source } : null,
      liveLocalTracks: k ? k.liveLocalTracks() : [],
      joinNote: text('#join-note'),
      joinForm: shown('#join-form'),
      passwordForm: shown('#room-password-form'),
      passwordReason: text('#room-password-reason'),
      passwordField: shown('#room-password'),
      lobbyWait: shown('#lobby-wait') ? text('#lobby-wait h1') : null,
      hostPanel: shown('#host-panel'),
      lobbyToggle: document.querySelector('#lobby-toggle')?.checked ?? null,
      lobbyBadge: shown('#lobby-label'),
      lobbyCount: text('#lobby-count'),
      lobbyList: [...document.querySelectorAll('#lobby-list li')].map((li) => ({
        id: li.dataset.lobbyId,
        text: li.textContent.trim(),
        admit: li.querySelector('button[data-admit]')?.dataset?.admit ?? null,
        deny: li.querySelector('button[data-deny]')?.dataset?.deny ?? null,
      })),
      passwordStatus: shown('#room-password-status') ? text('#room-password-status') : null,
      passwordInput: document.querySelector('#room-password-input')?.value ?? null,
    };
  });
  return { ...view, ...more };
}

/** Everything the page keeps in storage, as one string (to look for the room password in it). */
async function storageText(page) {
  return page.evaluate(() => {
    const dump = (st) => {
      const out = {};
      for (let i = 0; i < st.length; i += 1) out[st.key(i)] = st.getItem(st.key(i));
      return out;
    };
    try {
      return JSON.stringify({ session: dump(window.sessionStorage), local: dump(window.localStorage) });
    } catch (e) {
      return String(e);
    }
  });
}

/** Waits until `page` is in state `want` (`check(s)` may ask more); `failStates` fail at once. */
function inState(stage, page, who, want, timeoutMs, { check = () => true, failStates = ['error'] } = {}) {
  return until(stage, `${who} in state ${want}`, timeoutMs, async () => {
    const s = await snapshot(page);
    if (failStates.includes(s.state)) throw new StageError(stage, `${who} is in state ${s.state}: ${s.error ?? s.status}`);
    return s.state === want && check(s)
      ? { ok: true, value: s }
      : {
          ok: false,
          last: { state: s.state, status: s.status, error: s.error, reason: s.passwordReason, note: s.joinNote },
        };
  });
}

/** Types `password` into the page's room-password form and submits it. */
async function submitPassword(page, password) {
  await page.fill('#room-password', password);
  await page.click('#room-password-submit');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const artifacts = opts.artifacts ? path.resolve(opts.artifacts) : null;
  if (artifacts) fs.mkdirSync(artifacts, { recursive: true });
  const tag = Math.random().toString(36).slice(2, 7);
  const wrongPassword = `not-the-password-${tag}`;
  const guestName = `Guest-${tag}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const result = { event: 'result', ok: false, room: opts.room, ids: {}, names: { guest: guestName } };
  const started = Date.now();
  let ctx = null;
  const pages = {};
  const consoleLines = {}; // page -> its console lines (searched for the passwords at the end)
  let stage = 'launch';
  const step = (name, extra) => emit({ event: 'stage', stage: name, at_ms: Date.now() - started, ...extra });

  const shoot = async (label) => {
    if (!artifacts) return;
    for (const [who, page] of Object.entries(pages)) {
      try {
        await page.screenshot({ path: path.join(artifacts, `lobby-${who}-${label}.png`) });
      } catch (e) {
        console.error(`screenshot ${who}-${label} failed: ${e}`);
      }
    }
  };

  /** Opens page `who` (its console logged to stderr and kept) on the room with access token `token`. */
  const open = async (who, token, extra) => {
    const page = who === 'teacher' ? (ctx.pages()[0] ?? (await ctx.newPage())) : await ctx.newPage();
    pages[who] = page;
    consoleLines[who] = [];
    page.on('console', (m) => {
      consoleLines[who].push(m.text());
      console.error(`[${who}] ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => console.error(`[${who}] pageerror: ${e}`));
    const q = new URLSearchParams({ room: opts.room, name: who, autojoin: '1', token, ...extra });
    await page.goto(`${opts.url}/?${q}`, { timeout: 20000 });
    return page;
  };

  const overall = overallTimeout(result, () => stage, opts.timeout);

  try {
    ctx = await launchChromium(profile, opts.chromium, { viewport: { width: 1280, height: 900 } });

    // a. The teacher (a host account) joins, turns the lobby on and sets a room password.
    stage = 'teacher-join';
    const teacher = await open('teacher', opts['host-token'], {});
    await joinedView(stage, teacher, 'teacher', 20000, { check: (v) => v.role === 'host' });
    result.ids.teacher = (await snapshot(teacher)).participantId;
    step(stage);

    stage = 'lobby-on';
    await until(stage, 'the lobby switch in the host panel', 10000, async () => {
      const s = await snapshot(teacher);
      return s.hostPanel && s.lobbyToggle === false ? { ok: true } : { ok: false, last: { hostPanel: s.hostPanel, toggle: s.lobbyToggle } };
    });
    await teacher.check('#lobby-toggle');
    result.lobby_on = await until(stage, 'the lobby on at the teacher', 10000, async () => {
      const s = await snapshot(teacher);
      return s.settings?.lobby === true && s.lobbyToggle === true && s.lobbyBadge
        ? { ok: true, value: { settings: s.settings, toggle: s.lobbyToggle, badge: s.lobbyBadge } }
        : { ok: false, last: { settings: s.settings, toggle: s.lobbyToggle, badge: s.lobbyBadge, error: s.error } };
    });
    step(stage);

    stage = 'password-set';
    await teacher.fill('#room-password-input', opts.password);
    await teacher.click('#room-password-set');
    result.password_set = await until(stage, '"Password set" in the host panel', 10000, async () => {
      const s = await snapshot(teacher);
      return /Password set/.test(s.passwordStatus ?? '') && s.roomProtected === true
        ? { ok: true, value: { status: s.passwordStatus, protected: s.roomProtected, inputAfter: s.passwordInput, settings: s.settings } }
        : { ok: false, last: { status: s.passwordStatus, protected: s.roomProtected, error: s.error } };
    });
    await shoot('protected');
    step(stage);

    // b. The student (a participant account): asked for the password, a wrong one is refused,
    // the right one lets it into the lobby.
    stage = 'student-password';
    const student = await open('student', opts['student-token'], {});
    result.student_asked = await inState(stage, student, 'student', 'password', 20000, {
      check: (s) => s.passwordForm && s.passwordField && !!s.passwordReason,
    }).then((s) => ({ state: s.state, reason: s.passwordReason, status: s.status, form: s.passwordForm, liveLocalTracks: s.liveLocalTracks }));
    await submitPassword(student, wrongPassword);
    result.student_wrong = await inState(stage, student, 'student', 'password', 20000, {
      check: (s) => /wrong/i.test(s.passwordReason ?? ''),
    }).then((s) => ({ state: s.state, reason: s.passwordReason, form: s.passwordForm }));
    await shoot('password');
    step(stage);

    stage = 'student-lobby';
    await submitPassword(student, opts.password);
    const lobbyAt = Date.now();
    {
      const s = await inState(stage, student, 'student', 'lobby', 20000, { check: (s) => !!s.lobbyWait });
      result.student_lobby = { state: s.state, wait: s.lobbyWait, status: s.status, joinForm: s.joinForm, participantId: s.participantId };
    }
    step(stage);

    // c. The teacher sees the student waiting and admits it; the student joins and decodes the
    // teacher's camera.
    stage = 'teacher-sees-lobby';
    const studentName = (await snapshot(student)).auth?.name || 'Pupil';
    result.names.student = studentName;
    result.teacher_lobby = await until(stage, `${studentName} in the teacher's lobby list`, 15000, async () => {
      const s = await snapshot(teacher);
      const entry = s.lobbyList.find((e) => e.text.includes(studentName));
      const hook = (s.lobby ?? []).find((w) => w.name === studentName);
      return entry && hook && entry.admit === hook.participant && entry.deny === hook.participant
        ? { ok: true, value: { entry, hook: s.lobby, count: s.lobbyCount, seenMs: Date.now() - lobbyAt } }
        : { ok: false, last: { list: s.lobbyList, hook: s.lobby, count: s.lobbyCount } };
    });
    // Waiting takes as long as a host needs: more than the page's 5 s join-reply timeout.
    await sleep(Math.max(0, 6000 - (Date.now() - lobbyAt)));
    {
      const s = await snapshot(student);
      result.student_lobby.after_6s = { state: s.state, reconnects: s.reconnects, error: s.error };
      if (s.state !== 'lobby') throw new StageError(stage, `the student left the lobby by itself: ${s.state} (${s.error ?? s.status})`);
    }
    await shoot('lobby');
    step(stage);

    stage = 'admit';
    const admitId = result.teacher_lobby.entry.admit;
    const admittedAt = Date.now();
    await teacher.click(`#lobby-list button[data-admit="${admitId}"]`);
    {
      const v = await joinedView(stage, student, 'student', 20000, { failStates: ['error', 'denied', 'removed'] });
      result.admitted = { state: v.state, role: v.role, participantId: v.participantId, ms: Date.now() - admittedAt };
      result.ids.student = v.participantId;
    }
    result.teacher_lobby_after_admit = await until(stage, "the teacher's lobby list empty again", 10000, async () => {
      const s = await snapshot(teacher);
      return s.lobbyList.length === 0 && (s.lobby ?? []).length === 0
        ? { ok: true, value: { list: s.lobbyList, count: s.lobbyCount, listed: s.participants.some((p) => p.id === result.ids.student) } }
        : { ok: false, last: { list: s.lobbyList, hook: s.lobby } };
    });
    step(stage);

    stage = 'student-sees-teacher';
    result.student_sees_teacher = await decodedGrowth(
      stage,
      student,
      `camera tile of ${result.ids.teacher}`,
      tileOf(result.ids.teacher, 'camera'),
      30,
      30000,
      { shown: true },
    );
    await shoot('admitted');
    step(stage, { growth: result.student_sees_teacher.growth });

    // d. A guest (invite link): gives the password, waits, and the teacher denies it.
    stage = 'guest-lobby';
    const guest = await open('guest', opts['guest-token'], { name: guestName });
    await inState(stage, guest, 'guest', 'password', 20000, { check: (s) => s.passwordForm });
    await submitPassword(guest, opts.password);
    {
      const s = await inState(stage, guest, 'guest', 'lobby', 20000, { check: (s) => !!s.lobbyWait });
      result.guest_lobby = { state: s.state, wait: s.lobbyWait };
    }
    result.teacher_lobby_guest = await until(stage, `${guestName} in the teacher's lobby list`, 15000, async () => {
      const s = await snapshot(teacher);
      const entry = s.lobbyList.find((e) => e.text.includes(guestName));
      return entry ? { ok: true, value: { entry, count: s.lobbyCount } } : { ok: false, last: { list: s.lobbyList } };
    });
    step(stage);

    stage = 'deny';
    await teacher.click(`#lobby-list button[data-deny="${result.teacher_lobby_guest.entry.deny}"]`);
    {
      const s = await inState(stage, guest, 'guest', 'denied', 15000, { failStates: ['error', 'joined'] });
      result.denied = { state: s.state, joinNote: s.joinNote, status: s.status, error: s.error };
    }
    await shoot('denied');
    await sleep(3000);
    {
      const s = await snapshot(guest);
      result.denied.after_3s = { state: s.state, reconnects: s.reconnects, moving: s.moving, ws: s.ws, liveLocalTracks: s.liveLocalTracks };
      const t = await snapshot(teacher);
      result.denied.teacher = { lobbyList: t.lobbyList, listsGuest: t.participants.some((p) => p.text.includes(guestName)) };
    }
    step(stage);

    // e. "Remove and ban" (confirmed): the student's page shows `removed`; reloading it (same
    // token) is refused for good.
    stage = 'ban';
    result.ban = {};
    teacher.once('dialog', (d) => {
      result.ban.dialog = { type: d.type(), message: d.message() };
      d.accept().catch((e) => console.error(`accepting the dialog: ${e}`));
    });
    const sid = result.ids.student;
    await teacher.click(`#participants li[data-participant-id="${sid}"] button[data-ban="${sid}"]`);
    {
      const s = await inState(stage, student, 'student', 'removed', 10000);
      result.ban.removed = { state: s.state, error: s.error, status: s.status };
    }
    await until(stage, 'the student gone from the teacher list', 10000, async () => {
      const s = await snapshot(teacher);
      return s.participants.some((p) => p.id === sid) ? { ok: false, last: s.participants } : { ok: true };
    });
    step(stage);

    stage = 'banned-reload';
    await student.reload({ timeout: 20000 });
    {
      // The node checks the ban before the password; should it ask anyway, give it.
      let typed = false;
      const s = await until(stage, 'the reloaded student page in state banned', 20000, async () => {
        const v = await snapshot(student);
        if (v.state === 'joined' || v.state === 'lobby' || v.state === 'error') {
          throw new StageError(stage, `the banned student got to state ${v.state} (${v.error ?? v.status})`);
        }
        if (v.state === 'password' && !typed) {
          typed = true;
          await submitPassword(student, opts.password);
        }
        return v.state === 'banned' ? { ok: true, value: v } : { ok: false, last: { state: v.state, status: v.status, note: v.joinNote } };
      });
      result.ban.banned = { state: s.state, joinNote: s.joinNote, status: s.status, error: s.error, passwordAsked: typed };
    }
    await shoot('banned');
    await sleep(3000);
    {
      const s = await snapshot(student);
      result.ban.banned.after_3s = { state: s.state, reconnects: s.reconnects, moving: s.moving, ws: s.ws, liveLocalTracks: s.liveLocalTracks };
      const t = await snapshot(teacher);
      result.ban.teacher = { state: t.state, role: t.role, listsStudent: t.participants.some((p) => p.text.includes(studentName)), lobby: t.lobbyList };
    }
    step(stage);

    // The room password (and the wrong one) never in a URL, a console line or storage.
    stage = 'no-leaks';
    result.leaks = {};
    for (const [who, page] of Object.entries(pages)) {
      const url = page.url();
      const storage = await storageText(page);
      const lines = consoleLines[who] ?? [];
      const hits = (t) => [opts.password, wrongPassword].filter((p) => t.includes(p)).length;
      result.leaks[who] = {
        url: hits(url),
        console: lines.reduce((n, l) => n + hits(l), 0),
        consoleLines: lines.length,
        storage: hits(storage),
      };
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
