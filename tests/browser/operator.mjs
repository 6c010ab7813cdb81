// Owns: the headless-Chromium scenario of the operator page (/operator, nodes/static/operator.*)
// on a mesh with access control — the page asks for credentials; a wrong password shows the
// sign-in error and no data; the operator signs in through the form, and the page then shows
// every expected node and site, the relay link between them with its RTT, the room with its
// participants (and, opened, who is where in which role) and forwarding-latency figures per
// node; Drain on a node (the confirm dialog accepted) marks it draining, and it later leaves the
// mesh; End room (confirmed) ends the room. The password must never show up in the page's
// URL, console or storage.
// Prints JSON lines (stage events and one final `result` with what the page showed at each
// stage); exits 1 with a reason on failure. Screenshots go to --artifacts/operator/
// (operator-<label>.png); --docs-shot FILE also gets a copy of the full-page screenshot taken
// with everything live. Run by tests/tests/e2e_browser_operator.rs inside a network namespace.
//
// Usage: node operator.mjs --url http://127.0.0.11:PORT --room ROOM --user USER --password P
//                          --nodes n1,n2 --sites a,b --drain n2 [--min-participants 2]
//                          [--docs-shot FILE] [--artifacts DIR] [--timeout SECONDS]
//                          [--chromium /usr/bin/chromium]

import {
  closeBrowser,
  emit,
  launchChromium,
  overallTimeout,
  parseOptions,
  recordFailure,
  runMain,
  sleep,
  until,
} from './harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function parseArgs(argv) {
  const opts = parseOptions(argv, {
    timeout: 200,
    user: null,
    password: null,
    nodes: null,
    sites: null,
    drain: null,
    'min-participants': 2,
    'docs-shot': null,
  });
  for (const k of ['user', 'password', 'nodes', 'sites', 'drain']) {
    if (!opts[k]) throw new Error(`--${k} is required`);
  }
  opts.nodes = opts.nodes.split(',');
  opts.sites = opts.sites.split(',');
  return opts;
}

/** What the operator page shows (DOM) and knows (window.kaskadeOperator). */
async function snapshot(page) {
  return page.evaluate(() => {
    const k = window.kaskadeOperator;
    const text = (e) => (e ? e.textContent.trim() : null);
    const shown = (sel) => {
      const e = document.querySelector(sel);
      return !!e && !e.hidden && e.offsetParent !== null;
    };
    const cells = (tr) => Object.fromEntries([...tr.children].map((c) => [c.className.split(' ')[0], c.textContent.trim()]));
    return {
      state: document.body.dataset.state ?? null,
      banner: shown('#error-banner') ? text(document.querySelector('#error-banner')) : null,
      loginShown: shown('#login'),
      loginNote: text(document.querySelector('#login-note')),
      loginError: text(document.querySelector('#login-error')),
      passwordValue: document.querySelector('#login-password')?.value ?? null,
      dashboardShown: shown('#dashboard'),
      nodeInfo: shown('#node-info') ? text(document.querySelector('#node-info')) : null,
      controlPlane: shown('#control-plane') ? text(document.querySelector('#control-plane')) : null,
      controlPlaneOk: document.querySelector('#control-plane')?.dataset?.ok ?? null,
      nodes: [...document.querySelectorAll('#nodes-body tr[data-node-id]')].map((tr) => ({
        id: tr.dataset.nodeId,
        state: tr.dataset.state,
        cells: cells(tr),
        badges: [...tr.querySelectorAll('.badge')].map((b) => b.textContent.trim()),
        drainLabel: tr.querySelector('button[data-drain]')?.getAttribute('aria-label') ?? null,
        drainDisabled: tr.querySelector('button[data-drain]')?.disabled ?? null,
      })),
      mapSites: [...document.querySelectorAll('#mesh-map g.site')].map((g) => ({
        name: g.dataset.site,
        liveNodes: Number(g.dataset.liveNodes),
        state: g.dataset.state,
        text: [...g.querySelectorAll('text')].map((t) => t.textContent).join(' | '),
      })),
      mapNodes: [...document.querySelectorAll('#mesh-map g.node')].map((g) => ({
        id: g.dataset.nodeId,
        state: g.dataset.state,
        self: g.dataset.self === 'true',
        text: [...g.querySelectorAll('text')].map((t) => t.textContent).join(' | '),
      })),
      mapLinks: [...document.querySelectorAll('#mesh-map g.link:not(.link-label)')].map((g) => ({
        from: g.dataset.from,
        to: g.dataset.to,
        state: g.dataset.state,
        rttMs: g.dataset.rttMs === '' ? null : Number(g.dataset.rttMs),
        loss: g.dataset.loss === '' ? null : Number(g.dataset.loss),
        label: g.dataset.label,
        stroke: getComputedStyle(g.querySelector('path')).stroke,
      })),
      mapLabels: [...document.querySelectorAll('#mesh-map g.link-label text')].map((t) => t.textContent),
      mapControlPlane: text(document.querySelector('#mesh-map .cp-line')),
      latency: [...document.querySelectorAll('#latency-list li[data-node-id]')].map((li) => ({
        id: li.dataset.nodeId,
        p50: li.dataset.p50 === '' ? null : Number(li.dataset.p50),
        p99: Number(li.dataset.p99),
        points: Number(li.dataset.points),
        text: li.querySelector('.figures')?.textContent?.trim() ?? '',
        sparkline: li.querySelector('svg polyline.spark-p99')?.getAttribute('points')?.split(' ').filter(Boolean).length ?? 0,
      })),
      rooms: [...document.querySelectorAll('#rooms-body tr[data-room]')].map((tr) => ({ name: tr.dataset.room, cells: cells(tr) })),
      roomDetailShown: shown('#room-detail'),
      roomDetailTitle: text(document.querySelector('#room-detail-title')),
      roomTracks: text(document.querySelector('#room-tracks')),
      roomStatus: text(document.querySelector('#room-detail-status')),
      participants: [...document.querySelectorAll('#participants-body tr[data-participant-id]')].map((tr) => ({
        id: tr.dataset.participantId,
        name: tr.dataset.name,
        role: tr.dataset.role,
        node: tr.dataset.node,
        cells: cells(tr),
        removeLabel: tr.querySelector('button[data-remove]')?.getAttribute('aria-label') ?? null,
      })),
      tableHeaders: {
        nodes: [...document.querySelectorAll('#nodes-table thead th')].map((th) => th.textContent.trim()),
        rooms: [...document.querySelectorAll('#rooms-table thead th')].map((th) => th.textContent.trim()),
      },
      hooks: k
        ? {
            ready: k.ready,
            state: k.state,
            signedIn: k.signedIn,
            openAccess: k.openAccess,
            meshForbidden: k.meshForbidden,
            polls: k.polls,
            lastMeshNodes: k.lastMesh ? (k.lastMesh.nodes || []).map((n) => n.id) : null,
            lastMeshLinks: k.lastMesh ? (k.lastMesh.links || []).length : null,
            lastRooms: k.lastRooms ? (k.lastRooms.rooms || []).map((r) => r.name) : null,
            errors: k.errors.slice(-10),
            drains: k.drains,
            actions: k.actions,
          }
        : null,
    };
  });
}

/** Everything the page keeps in storage, as one string. */
async function storageText(page) {
  return page.evaluate(() => {
    const dump = (st) => {
      const out = {};
      for (let i = 0; i < st.length; i += 1) out[st.key(i)] = st.getItem(st.key(i));
      return out;
    };
    return JSON.stringify({ session: dump(window.sessionStorage), local: dump(window.localStorage) });
  });
}

/** Waits until `check(snapshot)` holds; the snapshot then. */
function shows(stage, page, what, timeoutMs, check, last = (s) => s) {
  return until(stage, what, timeoutMs, async () => {
    const s = await snapshot(page);
    return check(s) ? { ok: true, value: s } : { ok: false, last: last(s) };
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const artifacts = opts.artifacts ? path.resolve(opts.artifacts, 'operator') : null;
  if (artifacts) fs.mkdirSync(artifacts, { recursive: true });
  const wrongPassword = `not-the-password-${Math.random().toString(36).slice(2, 8)}`;
  const [selfNode] = opts.nodes;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kaskade-chromium-'));
  const result = { event: 'result', ok: false, room: opts.room, shots: {} };
  const started = Date.now();
  const consoleLines = [];
  let ctx = null;
  let page = null;
  let stage = 'launch';
  const step = (name, extra) => emit({ event: 'stage', stage: name, at_ms: Date.now() - started, ...extra });

  const shoot = async (label, fullPage = true) => {
    if (!artifacts || !page) return null;
    const file = path.join(artifacts, `operator-${label}.png`);
    try {
      await page.screenshot({ path: file, fullPage });
      result.shots[label] = file;
      return file;
    } catch (e) {
      console.error(`screenshot ${label} failed: ${e}`);
      return null;
    }
  };

  const overall = overallTimeout(result, () => stage, opts.timeout);

  try {
    ctx = await launchChromium(profile, opts.chromium, { viewport: { width: 1280, height: 900 } });
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('console', (m) => {
      consoleLines.push(m.text());
      console.error(`[operator] ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => {
      consoleLines.push(String(e));
      console.error(`[operator] pageerror: ${e}`);
    });

    // a. Without credentials the node refuses the admin API: the page asks for them.
    stage = 'open';
    await page.goto(`${opts.url}/operator`, { timeout: 20000 });
    result.first = await shows(stage, page, 'the sign-in form', 15000, (s) => s.state === 'signin' && s.loginShown);
    step(stage);

    // b. A wrong password: the sign-in error, and no data anywhere.
    stage = 'wrong-password';
    await page.fill('#login-user', opts.user);
    await page.fill('#login-password', wrongPassword);
    await page.click('#login-submit');
    await shows(stage, page, 'the sign-in error', 10000, (s) => !!s.loginError, (s) => ({ state: s.state, error: s.loginError }));
    await sleep(2500); // two refresh periods: nothing may start polling behind the form
    result.wrong_password = await snapshot(page);
    await shoot('wrong-password', false);
    step(stage, { error: result.wrong_password.loginError });

    // c. The right password: the dashboard with the whole mesh.
    stage = 'sign-in';
    await page.fill('#login-password', opts.password);
    await page.click('#login-submit');
    result.signed_in = await shows(stage, page, 'the dashboard', 15000, (s) => s.state === 'live' && s.hooks?.ready && s.dashboardShown, (s) => ({
      state: s.state,
      error: s.loginError,
      banner: s.banner,
      hooks: s.hooks,
    }));
    step(stage);

    stage = 'mesh';
    const [a, b] = opts.nodes;
    const linkOf = (s) => s.mapLinks.find((l) => [l.from, l.to].sort().join() === [a, b].sort().join());
    result.mesh = await shows(
      stage,
      page,
      `nodes ${opts.nodes}, sites ${opts.sites}, the ${a}–${b} link with an RTT and latency figures`,
      45000,
      (s) =>
        opts.nodes.every((id) => s.nodes.some((n) => n.id === id && n.state === 'live') && s.mapNodes.some((n) => n.id === id)) &&
        opts.sites.every((name) => s.mapSites.some((x) => x.name === name)) &&
        (linkOf(s)?.rttMs ?? 0) > 0 &&
        opts.nodes.every((id) => s.latency.some((l) => l.id === id && l.points >= 2)) &&
        s.latency.some((l) => l.p99 > 0),
      (s) => ({ nodes: s.nodes.map((n) => [n.id, n.state]), sites: s.mapSites, links: s.mapLinks, latency: s.latency, banner: s.banner }),
    );
    step(stage, { link: linkOf(result.mesh) });

    // d. The room, then its participants.
    stage = 'rooms';
    result.rooms = await shows(
      stage,
      page,
      `room ${opts.room} with ${opts['min-participants']} participants`,
      30000,
      (s) => s.rooms.some((r) => r.name === opts.room && Number(r.cells.participants) >= opts['min-participants']),
      (s) => s.rooms,
    );
    await page.click(`#rooms-body button[data-open-room="${opts.room}"]`);
    result.room_detail = await shows(
      stage,
      page,
      `the participants of ${opts.room}`,
      15000,
      (s) => s.roomDetailShown && s.participants.length >= opts['min-participants'] && s.participants.every((p) => p.role && p.node),
      (s) => ({ shown: s.roomDetailShown, participants: s.participants, tracks: s.roomTracks }),
    );
    step(stage);

    stage = 'screenshot';
    const full = await shoot('page');
    if (full && opts['docs-shot']) {
      fs.mkdirSync(path.dirname(path.resolve(opts['docs-shot'])), { recursive: true });
      fs.copyFileSync(full, path.resolve(opts['docs-shot']));
      result.shots.docs = path.resolve(opts['docs-shot']);
    }
    step(stage);

    // e. Drain: confirm the dialog; the node shows as draining, then leaves the mesh.
    stage = 'drain';
    result.drain = {};
    page.once('dialog', (d) => {
      result.drain.dialog = { type: d.type(), message: d.message() };
      d.accept().catch((e) => console.error(`accepting the dialog: ${e}`));
    });
    const drainAt = Date.now();
    await page.click(`#nodes-body button[data-drain="${opts.drain}"]`);
    result.drain.draining = await shows(
      stage,
      page,
      `${opts.drain} shown as draining`,
      15000,
      (s) => s.nodes.some((n) => n.id === opts.drain && n.state === 'draining'),
      (s) => ({ nodes: s.nodes, drains: s.hooks?.drains, errors: s.hooks?.errors }),
    ).then((s) => ({ ms: Date.now() - drainAt, row: s.nodes.find((n) => n.id === opts.drain), drains: s.hooks.drains, map: s.mapNodes }));
    await shoot('draining');
    result.drain.gone = await shows(
      stage,
      page,
      `${opts.drain} gone from the mesh`,
      60000,
      (s) => !(s.hooks?.lastMeshNodes ?? [opts.drain]).includes(opts.drain),
      (s) => ({ nodes: s.nodes.map((n) => [n.id, n.state]), lastMeshNodes: s.hooks?.lastMeshNodes, banner: s.banner }),
    ).then((s) => ({
      ms: Date.now() - drainAt,
      row: s.nodes.find((n) => n.id === opts.drain) ?? null,
      mapNode: s.mapNodes.find((n) => n.id === opts.drain) ?? null,
      selfRow: s.nodes.find((n) => n.id === selfNode) ?? null,
      state: s.state,
    }));
    await shoot('drained');
    step(stage, { draining_ms: result.drain.draining.ms, gone_ms: result.drain.gone.ms });

    // f. End room (confirmed): the room leaves the rooms table; its detail says it is over.
    stage = 'end-room';
    result.end_room = {};
    page.once('dialog', (d) => {
      result.end_room.dialog = { type: d.type(), message: d.message() };
      d.accept().catch((e) => console.error(`accepting the dialog: ${e}`));
    });
    const endAt = Date.now();
    await page.click('#end-room');
    result.end_room.after = await shows(
      stage,
      page,
      `${opts.room} gone from the rooms table`,
      20000,
      (s) => !s.rooms.some((r) => r.name === opts.room) && /not open/.test(s.roomStatus ?? ''),
      (s) => ({ rooms: s.rooms, status: s.roomStatus, actions: s.hooks?.actions }),
    ).then((s) => ({ ms: Date.now() - endAt, rooms: s.rooms, status: s.roomStatus, actions: s.hooks.actions }));
    await shoot('room-ended');
    step(stage, { ms: result.end_room.after.ms });

    // The password never in the URL, a console line or storage.
    stage = 'no-leaks';
    const hits = (t) => [opts.password, wrongPassword].filter((p) => t.includes(p)).length;
    const storage = await storageText(page);
    result.leaks = {
      url: hits(page.url()),
      console: consoleLines.reduce((n, l) => n + hits(l), 0),
      storage: hits(storage),
      // The sign-in is kept for the tab (sessionStorage, see operator.js AUTH_STORAGE_KEY).
      storageHasToken: await page.evaluate(() => {
        try {
          return (JSON.parse(window.sessionStorage.getItem('kaskade.operator.auth'))?.token?.length ?? 0) > 0;
        } catch (_) {
          return false;
        }
      }),
    };
    step(stage);
    result.final = await snapshot(page);
    result.ok = true;
    result.elapsed_ms = Date.now() - started;
  } catch (e) {
    await recordFailure(result, e, stage, { page }, snapshot);
    await shoot('failure');
  } finally {
    await closeBrowser(ctx, profile, overall);
  }
  emit(result);
  process.exit(result.ok ? 0 : 1);
}

runMain(main);
