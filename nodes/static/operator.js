// Kaskade operator page (served at /operator): signs an operator in (`POST /api/login` without a
// tenant, the token kept in sessionStorage; or `?token=`, e.g. the node's --admin-token), then
// polls the admin API every 2 s (`GET /api/admin/mesh`, `/api/admin/rooms`, the open room's
// `/api/admin/rooms/{room}`) and draws the mesh map (sites, nodes, relay links with RTT and loss),
// the nodes' load with a Drain button, the rooms with their participants (Remove, End room) and
// a sparkline of each node's forwarding latency. A node in --insecure-dev answers loopback
// callers without a credential, so the page asks for one only when refused (401).
// Plain browser JavaScript, no build step, no external resources. Test hooks: window.kaskadeOperator.
'use strict';

(function () {
  const POLL_MS = 2000; // refresh period
  const FETCH_TIMEOUT_MS = 5000; // a request that takes longer counts as "node unreachable"
  const HISTORY_MS = 5 * 60 * 1000; // forwarding-latency sparkline window
  const GONE_KEEP_MS = 5 * 60 * 1000; // how long a node that left the mesh stays listed
  const SPARK_MIN_SPAN_MS = 30 * 1000; // the sparkline's time axis covers at least this
  const LOSS_ALERT_RATIO = 0.02; // links losing more than this are drawn red
  const NOTICE_HIDE_MS = 6000;
  const MAX_ERRORS = 50; // kept in the test hook
  const AUTH_STORAGE_KEY = 'kaskade.operator.auth';
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // Mesh map geometry (SVG user units).
  const MAP = {
    margin: 16,
    top: 34, // room for the control-plane line
    siteW: 300,
    nodeX: 14, // node box offset inside its site box
    nodeW: 170,
    nodeH: 50,
    nodeGap: 14,
    siteHead: 48, // site name and summary above the first node
    sitePad: 14,
    gapX: 170, // between site columns: room for link labels
    gapY: 60,
    perRow: 3,
    minWidth: 720, // the control-plane line fits
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    nodeInfo: $('node-info'),
    controlPlane: $('control-plane'),
    updated: $('updated'),
    who: $('who'),
    signOut: $('sign-out'),
    banner: $('error-banner'),
    actionStatus: $('action-status'),
    login: $('login'),
    loginNote: $('login-note'),
    loginForm: $('login-form'),
    loginUser: $('login-user'),
    loginPassword: $('login-password'),
    loginTenant: $('login-tenant'),
    loginError: $('login-error'),
    loginSubmit: $('login-submit'),
    dashboard: $('dashboard'),
    meshCard: $('mesh-card'),
    meshMap: $('mesh-map'),
    nodesCard: $('nodes-card'),
    nodesBody: $('nodes-body'),
    latencyCard: $('latency-card'),
    latencyList: $('latency-list'),
    latencyEmpty: $('latency-empty'),
    roomsBody: $('rooms-body'),
    roomsEmpty: $('rooms-empty'),
    roomDetail: $('room-detail'),
    roomDetailTitle: $('room-detail-title'),
    roomTracks: $('room-tracks'),
    participantsBody: $('participants-body'),
    participantsEmpty: $('participants-empty'),
    roomDetailStatus: $('room-detail-status'),
    endRoom: $('end-room'),
    closeRoom: $('close-room'),
  };

  // ---------------------------------------------------------------------------------------------
  // State and test hooks
  // ---------------------------------------------------------------------------------------------

  let auth = null; // {token, user, expiresAt, source: 'login' | 'url'} or null (try without)
  let pollTimer = null;
  let pollGeneration = 0; // bumped on sign-in / sign-out: answers of older polls are dropped
  let selectedRoom = null; // name of the room whose participants are shown
  let noticeTimer = null;
  let loginBusy = false;
  const seenNodes = new Map(); // id -> {record, site, lastSeen}
  const drainRequested = new Map(); // id -> {at, status}

  /** What the page knows, for tests and the curious (read-only by convention). */
  const hooks = {
    ready: false, // the first data was shown
    state: 'starting', // starting | signin | live | unreachable
    signedIn: false, // a credential is in use
    openAccess: false, // the node answered without a credential (--insecure-dev, loopback)
    meshForbidden: false, // the credential may see rooms but not the mesh (a tenant admin)
    lastMesh: null,
    lastRooms: null,
    lastRoom: null,
    lastUpdate: 0, // Date.now() of the last complete refresh
    polls: 0, // complete refreshes so far
    errors: [], // {at, kind, status, message}
    drains: [], // {node, httpStatus, status, at}
    actions: [], // {action, room, participant, httpStatus, status, at}
    history: {}, // node id -> [{t, p50, p99}]
    refresh: () => pollNow(),
  };
  window.kaskadeOperator = hooks;

  function setState(s) {
    hooks.state = s;
    document.body.dataset.state = s;
  }

  function recordError(kind, message, status) {
    hooks.errors.push({ at: Date.now(), kind, status: status ?? null, message });
    if (hooks.errors.length > MAX_ERRORS) hooks.errors.splice(0, hooks.errors.length - MAX_ERRORS);
  }

  // ---------------------------------------------------------------------------------------------
  // Credentials
  // ---------------------------------------------------------------------------------------------

  /** The claims of a JWT (not verified: only to show who we are and when the token ends). */
  function tokenClaims(token) {
    try {
      const part = token.split('.')[1];
      if (!part) return null;
      const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
      const v = JSON.parse(json);
      return v && typeof v === 'object' ? v : null;
    } catch (_) {
      return null; // an opaque token (the node's --admin-token)
    }
  }

  function authFrom(token, source, extra) {
    const c = tokenClaims(token) || {};
    const exp = Number((extra && extra.expires_at) ?? c.exp);
    return {
      token,
      source,
      user: (extra && extra.user) || c.sub || null,
      role: (extra && extra.role) || c.role || null,
      expiresAt: Number.isFinite(exp) && exp > 0 ? exp : null,
    };
  }

  const expired = (a) => a.expiresAt !== null && a.expiresAt * 1000 <= Date.now();

  function storeAuth(a) {
    try {
      const v = { token: a.token, source: a.source, user: a.user, role: a.role, expires_at: a.expiresAt };
      window.sessionStorage.setItem(AUTH_STORAGE_KEY, JSON.stringify(v));
    } catch (e) {
      console.warn('kaskade operator: cannot keep the sign-in in sessionStorage', String(e));
    }
  }

  function loadStoredAuth() {
    try {
      const v = JSON.parse(window.sessionStorage.getItem(AUTH_STORAGE_KEY) || 'null');
      if (!v || typeof v.token !== 'string' || !v.token) return null;
      return authFrom(v.token, v.source || 'login', v);
    } catch (_) {
      return null;
    }
  }

  function clearStoredAuth() {
    try {
      window.sessionStorage.removeItem(AUTH_STORAGE_KEY);
    } catch (_) {
      /* storage off */
    }
  }

  /** `?token=` moved out of the address bar into this tab's storage. */
  function takeUrlToken() {
    let u;
    try {
      u = new URL(window.location.href);
    } catch (_) {
      return null;
    }
    const token = (u.searchParams.get('token') || '').trim();
    if (!u.searchParams.has('token')) return null;
    u.searchParams.delete('token');
    try {
      window.history.replaceState(window.history.state, '', u.toString());
    } catch (_) {
      /* no history API */
    }
    return token ? authFrom(token, 'url') : null;
  }

  function setAuth(a) {
    auth = a;
    hooks.signedIn = !!a;
    ui.who.hidden = !a;
    ui.signOut.hidden = !a;
    if (a) ui.who.textContent = a.user ? `signed in: ${a.user}` : 'token from the link';
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP
  // ---------------------------------------------------------------------------------------------

  class Unreachable extends Error {}

  /** One admin API request: {status, body} (JSON when it parses, else text); throws
   * Unreachable when the node does not answer within FETCH_TIMEOUT_MS. */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (auth) headers.Authorization = `Bearer ${auth.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    let resp;
    let text;
    try {
      resp = await fetch(new URL(path, window.location.href).toString(), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'same-origin',
        signal: ctl.signal,
      });
      text = await resp.text();
    } catch (e) {
      throw new Unreachable(ctl.signal.aborted ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : String(e && e.message ? e.message : e));
    } finally {
      clearTimeout(timer);
    }
    let parsed = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (_) {
      parsed = text;
    }
    return { status: resp.status, ok: resp.ok, body: parsed };
  }

  /** The refusal's message: `{"error": …}` or the text the node sent. */
  function errorText(r) {
    if (r.body && typeof r.body === 'object' && typeof r.body.error === 'string') return r.body.error;
    if (typeof r.body === 'string' && r.body.trim()) return r.body.trim().slice(0, 300);
    return `HTTP ${r.status}`;
  }

  const seg = (s) => encodeURIComponent(s);

  // ---------------------------------------------------------------------------------------------
  // Banner, notices, sign-in
  // ---------------------------------------------------------------------------------------------

  function showBanner(text) {
    ui.banner.textContent = text;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
    ui.banner.textContent = '';
  }

  function notice(text, kind) {
    ui.actionStatus.textContent = text;
    ui.actionStatus.dataset.kind = kind || 'info';
    ui.actionStatus.hidden = false;
    if (noticeTimer) clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      ui.actionStatus.hidden = true;
    }, NOTICE_HIDE_MS);
  }

  /** Stops polling, forgets what was shown and asks for credentials (with `why`, if any). */
  function askSignIn(why, error) {
    pollGeneration += 1;
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
    setAuth(null);
    clearStoredAuth();
    clearData();
    hideBanner();
    setState('signin');
    ui.dashboard.hidden = true;
    ui.login.hidden = false;
    ui.loginNote.textContent = why || 'The admin view needs an operator account of this mesh.';
    ui.loginError.textContent = error || '';
    ui.loginSubmit.disabled = false;
    (ui.loginUser.value ? ui.loginPassword : ui.loginUser).focus();
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    if (loginBusy) return;
    const user = ui.loginUser.value.trim();
    const tenant = ui.loginTenant.value.trim().toLowerCase();
    const password = ui.loginPassword.value;
    if (!user) {
      ui.loginError.textContent = 'Enter your user id.';
      ui.loginUser.focus();
      return;
    }
    if (!password) {
      ui.loginError.textContent = 'Enter your password.';
      ui.loginPassword.focus();
      return;
    }
    ui.loginPassword.value = ''; // kept no longer than the request
    loginBusy = true;
    ui.loginSubmit.disabled = true;
    ui.loginError.textContent = '';
    const body = { user, password };
    if (tenant) body.tenant = tenant;
    let r;
    try {
      r = await api('POST', 'api/login', body);
    } catch (e) {
      r = null;
      ui.loginError.textContent = `Could not reach the node: ${e.message}`;
      recordError('login', e.message, null);
    } finally {
      loginBusy = false;
      ui.loginSubmit.disabled = false;
    }
    if (!r) return;
    if (r.status === 200 && r.body && typeof r.body.token === 'string') {
      const a = authFrom(r.body.token, 'login', r.body);
      if (a.role && a.role !== 'operator' && a.role !== 'tenant_admin') {
        ui.loginError.textContent = `This account (${a.role}) may not use the operator view.`;
        recordError('login', 'not an operator', r.status);
        return;
      }
      storeAuth(a);
      start(a);
      return;
    }
    if (r.status === 404) {
      // A node without access control has no login: its admin API answers loopback callers.
      ui.loginError.textContent = 'This node runs without access control: no sign-in needed.';
      start(null);
      return;
    }
    let message;
    if (r.status === 401) message = tenant ? 'Wrong organisation, user or password.' : 'Wrong user or password.';
    else if (r.status === 429) message = `Too many sign-in attempts; ${errorText(r)}`;
    else message = `Sign-in failed: ${errorText(r)}`;
    ui.loginError.textContent = message;
    recordError('login', message, r.status);
  }

  function signOut() {
    askSignIn('Signed out.');
  }

  // ---------------------------------------------------------------------------------------------
  // Polling
  // ---------------------------------------------------------------------------------------------

  /** Shows the dashboard and polls with credential `a` (null: try without). */
  function start(a) {
    setAuth(a);
    pollGeneration += 1;
    ui.login.hidden = true;
    ui.loginError.textContent = '';
    setState('starting');
    pollNow();
  }

  function pollNow() {
    if (hooks.state === 'signin') return;
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
    poll(pollGeneration);
  }

  function schedule(gen) {
    if (gen !== pollGeneration) return;
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = setTimeout(() => poll(gen), POLL_MS);
  }

  async function poll(gen) {
    if (auth && expired(auth)) {
      askSignIn('Your sign-in expired; sign in again.');
      return;
    }
    let mesh;
    let rooms;
    let room = null;
    const roomName = selectedRoom;
    try {
      [mesh, rooms] = await Promise.all([api('GET', 'api/admin/mesh'), api('GET', 'api/admin/rooms')]);
      if (roomName !== null && rooms.ok) room = await api('GET', `api/admin/rooms/${seg(roomName)}`);
    } catch (e) {
      if (gen !== pollGeneration) return;
      unreachable(e.message);
      schedule(gen);
      return;
    }
    if (gen !== pollGeneration) return; // signed in or out meanwhile
    if (mesh.status === 401 || rooms.status === 401) {
      const why = auth
        ? 'The node refused the sign-in (expired or revoked); sign in again.'
        : 'Sign in with an operator account of this mesh.';
      if (auth) recordError('auth', why, 401);
      askSignIn(why);
      return;
    }
    if (!rooms.ok && rooms.status === 403 && mesh.status === 403) {
      recordError('auth', errorText(mesh), 403);
      askSignIn('This account may not use the admin API; sign in as an operator.', errorText(mesh));
      return;
    }
    const failures = [];
    if (mesh.ok) hooks.meshForbidden = false;
    else if (mesh.status === 403) hooks.meshForbidden = true;
    else failures.push(`mesh: ${errorText(mesh)}`);
    if (!rooms.ok) failures.push(`rooms: ${errorText(rooms)}`);
    if (failures.length) {
      const text = `The admin API answered with an error (${failures.join('; ')}); retrying.`;
      showBanner(text);
      recordError('api', text, mesh.ok ? rooms.status : mesh.status);
    } else {
      hideBanner();
    }
    hooks.openAccess = !auth;
    ui.login.hidden = true;
    ui.dashboard.hidden = false;
    ui.dashboard.dataset.stale = 'false';
    if (mesh.ok) renderMesh(mesh.body);
    showMeshParts(!hooks.meshForbidden);
    if (rooms.ok) renderRooms(rooms.body);
    if (roomName !== null && roomName === selectedRoom && room) renderRoom(roomName, room);
    hooks.polls += 1;
    hooks.lastUpdate = Date.now();
    ui.updated.hidden = false;
    ui.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (!failures.length) {
      hooks.ready = true;
      setState('live');
    }
    schedule(gen);
  }

  function unreachable(message) {
    recordError('network', message, null);
    showBanner('Node unreachable, retrying…');
    ui.dashboard.dataset.stale = 'true';
    setState('unreachable');
  }

  function showMeshParts(on) {
    ui.meshCard.hidden = !on;
    ui.nodesCard.hidden = !on;
    ui.latencyCard.hidden = !on;
  }

  function clearData() {
    hooks.ready = false;
    hooks.lastMesh = null;
    hooks.lastRooms = null;
    hooks.lastRoom = null;
    hooks.history = {};
    hooks.meshForbidden = false;
    seenNodes.clear();
    drainRequested.clear();
    selectedRoom = null;
    ui.meshMap.replaceChildren();
    ui.nodesBody.replaceChildren();
    ui.latencyList.replaceChildren();
    ui.roomsBody.replaceChildren();
    ui.participantsBody.replaceChildren();
    ui.roomDetail.hidden = true;
    ui.nodeInfo.hidden = true;
    ui.controlPlane.hidden = true;
    ui.updated.hidden = true;
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting and DOM helpers
  // ---------------------------------------------------------------------------------------------

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const fmtInt = (v) => (isNum(v) ? Math.round(v).toLocaleString('en') : '–');

  function fmtRtt(ms) {
    if (!isNum(ms)) return '– ms';
    if (ms < 1) return `${ms.toFixed(2)} ms`;
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    return `${Math.round(ms)} ms`;
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

  const fmtLoss = (ratio) => (isNum(ratio) ? `${(ratio * 100).toFixed(1)}%` : '–%');

  function fmtBps(bps) {
    if (!isNum(bps)) return '–';
    if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
    if (bps >= 1e3) return `${Math.round(bps / 1e3)} kbit/s`;
    return `${Math.round(bps)} bit/s`;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'className') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  /** Keeps `tbody`'s rows in step with `items` by key (rows, and their focused buttons, survive
   * a refresh); `create(item)` makes a row, `update(row, item)` fills it. */
  function syncRows(tbody, items, key, create, update) {
    const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
    let prev = null;
    for (const item of items) {
      const k = key(item);
      let tr = old.get(k);
      if (tr) old.delete(k);
      else {
        tr = create(item);
        tr.dataset.key = k;
      }
      update(tr, item);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
  }

  // ---------------------------------------------------------------------------------------------
  // Mesh: nodes, map, latency
  // ---------------------------------------------------------------------------------------------

  /** Every node to show: the live ones and those that left the mesh recently, with a state. */
  function nodeRows(mesh) {
    const now = Date.now();
    const live = new Set();
    for (const n of mesh.nodes || []) {
      live.add(n.id);
      seenNodes.set(n.id, { record: n, site: n.site, lastSeen: now });
    }
    // Far ends of reported links that are not (or no longer) live.
    for (const l of mesh.links || []) {
      for (const [id, site] of [[l.from, l.from_site], [l.to, l.to_site]]) {
        if (id && !live.has(id) && !seenNodes.has(id)) seenNodes.set(id, { record: null, site: site || '?', lastSeen: now });
      }
    }
    const rows = [];
    for (const [id, seen] of seenNodes) {
      if (!live.has(id) && now - seen.lastSeen > GONE_KEEP_MS && !(mesh.links || []).some((l) => l.from === id || l.to === id)) {
        seenNodes.delete(id);
        continue;
      }
      const rec = live.has(id) ? seen.record : null;
      let state = 'live';
      if (!rec) state = 'gone';
      else if (rec.draining || drainRequested.has(id)) state = 'draining';
      rows.push({ id, site: seen.site || '?', rec, state, last: seen.record });
    }
    rows.sort((a, b) => a.site.localeCompare(b.site) || a.id.localeCompare(b.id));
    return rows;
  }

  function renderMesh(mesh) {
    if (!mesh || typeof mesh !== 'object') return;
    hooks.lastMesh = mesh;
    ui.nodeInfo.hidden = false;
    ui.nodeInfo.textContent = `node ${mesh.node ?? '?'} · site ${mesh.site ?? '?'}${mesh.version ? ` · v${mesh.version}` : ''}`;
    const cp = mesh.control_plane || {};
    ui.controlPlane.hidden = false;
    ui.controlPlane.dataset.ok = String(cp.reachable !== false);
    ui.controlPlane.querySelector('.text').textContent = `control plane ${cp.kind ?? '?'}: ${cp.reachable === false ? 'unreachable' : 'reachable'}`;
    const rows = nodeRows(mesh);
    recordHistory(mesh);
    renderNodesTable(rows);
    renderMap(mesh, rows);
    renderLatency(rows);
  }

  function stateBadge(state, self) {
    const label = { live: 'live', draining: 'draining', gone: 'left the mesh' }[state] || state;
    const frag = document.createDocumentFragment();
    frag.append(el('span', { className: `badge ${state}`, 'data-badge': state, text: label }));
    if (self) frag.append(' ', el('span', { className: 'badge self', title: 'the node serving this page', text: 'this node' }));
    return frag;
  }

  function renderNodesTable(rows) {
    syncRows(
      ui.nodesBody,
      rows,
      (r) => r.id,
      (r) => {
        const tr = el('tr', { 'data-node-id': r.id });
        for (const cls of ['id', 'site', 'sessions num', 'tracks num', 'pps num', 'cpu num', 'latency num', 'state', 'action']) {
          tr.append(el(cls === 'id' ? 'th' : 'td', { className: cls, scope: cls === 'id' ? 'row' : null }));
        }
        const drain = el('button', { type: 'button', className: 'btn danger small', 'data-drain': r.id, 'aria-label': `Drain node ${r.id}`, text: 'Drain' });
        drain.addEventListener('click', () => drainNode(r.id));
        tr.querySelector('.action').append(drain);
        return tr;
      },
      (tr, r) => {
        const load = (r.rec || r.last || {}).load || {};
        const cell = (cls) => tr.querySelector(`.${cls.split(' ')[0]}`);
        tr.dataset.state = r.state;
        cell('id').textContent = r.id;
        cell('site').textContent = r.site;
        const cap = isNum(load.capacity_sessions) && load.capacity_sessions > 0 ? fmtInt(load.capacity_sessions) : '–';
        const sess = cell('sessions');
        sess.textContent = `${fmtInt(load.sessions)} / ${cap}`;
        sess.classList.toggle('over', cap !== '–' && load.sessions > load.capacity_sessions);
        cell('tracks').textContent = fmtInt(load.tracks);
        cell('pps').textContent = fmtInt(load.packets_per_sec);
        cell('cpu').textContent = fmtInt(load.cpu_percent);
        cell('latency').textContent = `${fmtInt(load.forward_latency_p50_us)} / ${fmtInt(load.forward_latency_p99_us)}`;
        cell('state').replaceChildren(stateBadge(r.state, r.rec && r.rec.self));
        const btn = tr.querySelector('button[data-drain]');
        btn.disabled = r.state !== 'live';
        btn.title = r.state === 'live' ? `Move ${r.id}'s participants to other nodes, then stop it` : `${r.id} is ${r.state}`;
      },
    );
  }

  async function drainNode(id) {
    const row = seenNodes.get(id);
    const ok = window.confirm(
      `Drain node ${id}${row && row.site ? ` (site ${row.site})` : ''}?\n\n` +
        'It stops taking new participants, moves the ones it has to other nodes and then exits.',
    );
    if (!ok) return;
    let r;
    try {
      r = await api('POST', `api/admin/nodes/${seg(id)}/drain`);
    } catch (e) {
      notice(`Drain of ${id} not sent: node unreachable (${e.message}).`, 'error');
      recordError('network', e.message, null);
      return;
    }
    const status = r.body && typeof r.body === 'object' ? r.body.status ?? null : null;
    hooks.drains.push({ node: id, httpStatus: r.status, status, at: Date.now() });
    if (r.status === 401) {
      askSignIn('The node refused the sign-in (expired or revoked); sign in again.');
      return;
    }
    if (r.ok) {
      drainRequested.set(id, { at: Date.now(), status });
      notice(`Node ${id}: ${status || 'draining'}.`);
    } else {
      notice(`Drain of ${id} refused: ${errorText(r)}`, 'error');
      recordError('action', `drain ${id}: ${errorText(r)}`, r.status);
    }
    pollNow();
  }

  /** Links grouped per pair of nodes (each direction is reported by its near end); a link to a
   * node in `gone` (not live any more) counts as down whatever its near end still reports. */
  function linkPairs(mesh, gone) {
    const pairs = new Map();
    for (const l of mesh.links || []) {
      if (!l || !l.from || !l.to || l.from === l.to) continue;
      const [a, b] = [l.from, l.to].sort();
      const key = `${a}\u0000${b}`;
      if (!pairs.has(key)) pairs.set(key, { a, b, dirs: [] });
      pairs.get(key).dirs.push(l);
    }
    return [...pairs.values()].map((p) => {
      const endGone = gone.has(p.a) || gone.has(p.b);
      const up = endGone ? [] : p.dirs.filter((d) => d.up);
      const down = up.length < p.dirs.length;
      const rtt = up.map((d) => d.rtt_ms).filter(isNum);
      const loss = up.map((d) => d.loss_ratio).filter(isNum);
      const worstLoss = loss.length ? Math.max(...loss) : null;
      const state = down ? 'down' : worstLoss !== null && worstLoss > LOSS_ALERT_RATIO ? 'bad' : 'ok';
      return { ...p, endGone, state, rtt: rtt.length ? Math.max(...rtt) : null, loss: worstLoss };
    });
  }

  function renderMap(mesh, rows) {
    const sites = new Map(); // name -> {name, summary, nodes: [row]}
    for (const s of mesh.sites || []) sites.set(s.name, { name: s.name, summary: s, nodes: [] });
    for (const r of rows) {
      if (!sites.has(r.site)) sites.set(r.site, { name: r.site, summary: null, nodes: [] });
      sites.get(r.site).nodes.push(r);
    }
    const siteList = [...sites.values()].sort((x, y) => x.name.localeCompare(y.name));
    const cols = Math.max(1, Math.min(MAP.perRow, siteList.length));
    const maxNodes = Math.max(1, ...siteList.map((s) => s.nodes.length));
    const siteH = MAP.siteHead + maxNodes * (MAP.nodeH + MAP.nodeGap) - MAP.nodeGap + MAP.sitePad;
    const rowsOfSites = Math.ceil(siteList.length / cols) || 1;
    const width = Math.max(MAP.minWidth, MAP.margin * 2 + cols * MAP.siteW + (cols - 1) * MAP.gapX);
    const height = MAP.top + rowsOfSites * siteH + (rowsOfSites - 1) * MAP.gapY + MAP.margin;

    const pos = new Map(); // node id -> {cx, cy, left, right, col, row, index, site}
    const siteLayer = svg('g', { class: 'sites' });
    const nodeLayer = svg('g', { class: 'nodes' });
    siteList.forEach((s, i) => {
      const col = i % cols;
      const row = Math.floor(i / cols);
      const x = MAP.margin + col * (MAP.siteW + MAP.gapX);
      const y = MAP.top + row * (siteH + MAP.gapY);
      const live = s.nodes.filter((n) => n.state !== 'gone').length;
      const sum = s.summary;
      const sessions = sum && isNum(sum.sessions) ? sum.sessions : s.nodes.reduce((t, n) => t + ((n.rec && n.rec.load && n.rec.load.sessions) || 0), 0);
      const draining = sum && isNum(sum.draining_nodes) ? sum.draining_nodes : s.nodes.filter((n) => n.state === 'draining').length;
      // The API's `nodes` counts the site's live nodes (`live_nodes` if it says so apart).
      let liveNodes = live;
      if (sum && isNum(sum.live_nodes)) liveNodes = sum.live_nodes;
      else if (sum && isNum(sum.nodes)) liveNodes = sum.nodes;
      const total = Math.max(s.nodes.length, liveNodes);
      const down = liveNodes === 0;
      const summary = down
        ? `site down: no live node${total ? ` (${total} known)` : ''}`
        : `${liveNodes}/${plural(total, 'node')} live · ${plural(sessions, 'session')}${draining ? ` · ${draining} draining` : ''}`;
      const g = svg(
        'g',
        { class: 'site', 'data-site': s.name, 'data-live-nodes': liveNodes, 'data-state': down ? 'down' : 'up' },
        svg('title', { text: `site ${s.name}: ${summary}` }),
        svg('rect', { class: 'site-box', x, y, width: MAP.siteW, height: siteH, rx: 12 }),
        svg('text', { class: 'site-name', x: x + MAP.nodeX, y: y + 20, text: `site ${s.name}` }),
        svg('text', { class: 'site-sum', x: x + MAP.nodeX, y: y + 36, text: summary }),
      );
      siteLayer.append(g);
      s.nodes.forEach((n, j) => {
        const nx = x + MAP.nodeX;
        const ny = y + MAP.siteHead + j * (MAP.nodeH + MAP.nodeGap);
        pos.set(n.id, { cx: nx + MAP.nodeW / 2, cy: ny + MAP.nodeH / 2, left: nx, right: nx + MAP.nodeW, col, row, index: j, site: s.name });
        const load = (n.rec && n.rec.load) || {};
        const self = !!(n.rec && n.rec.self);
        const sessions = isNum(load.sessions) ? plural(load.sessions, 'session') : '– sessions';
        const title = n.state === 'gone' ? 'left the mesh' : `${sessions} · p99 ${fmtInt(load.forward_latency_p99_us)} µs`;
        nodeLayer.append(
          svg(
            'g',
            { class: 'node', 'data-node-id': n.id, 'data-state': n.state, 'data-self': String(self) },
            svg('title', { text: `node ${n.id} (site ${s.name}): ${n.state}${self ? ', serves this page' : ''}` }),
            svg('rect', { class: 'node-box', x: nx, y: ny, width: MAP.nodeW, height: MAP.nodeH, rx: 8 }),
            svg('text', { class: 'node-name', x: nx + 10, y: ny + 20, text: `${n.id}${self ? ' ★' : ''}${n.state !== 'live' ? ` · ${n.state === 'gone' ? 'gone' : n.state}` : ''}` }),
            svg('text', { class: 'node-sub', x: nx + 10, y: ny + 38, text: title }),
          ),
        );
      });
    });

    const linkLayer = svg('g', { class: 'links' });
    const labelLayer = svg('g', { class: 'link-labels' });
    const goneIds = new Set(rows.filter((r) => r.state === 'gone').map((r) => r.id));
    const pairs = linkPairs(mesh, goneIds);
    const crossCount = new Map(); // site pair -> links drawn so far (to stagger labels)
    for (const p of pairs) {
      const A = pos.get(p.a);
      const B = pos.get(p.b);
      if (!A || !B) continue;
      let d;
      let lx;
      let ly;
      if (A.site === B.site) {
        // Same site: a curve out of the nodes' right edges into the site's gutter.
        const bulge = 44 + 22 * (Math.abs(A.index - B.index) - 1);
        const x0 = A.right;
        d = `M ${x0} ${A.cy} C ${x0 + bulge} ${A.cy}, ${x0 + bulge} ${B.cy}, ${x0} ${B.cy}`;
        lx = x0 + 0.75 * bulge;
        ly = (A.cy + B.cy) / 2;
      } else {
        const [L, R] = A.cx <= B.cx ? [A, B] : [B, A];
        const x0 = L.col === R.col ? L.cx : L.right;
        const x1 = L.col === R.col ? R.cx : R.left;
        const y0 = L.cy;
        const y1 = R.cy;
        const span = Math.abs(R.col - L.col);
        // Sites further apart than neighbours: arc over the ones between.
        const lift = L.row === R.row && span > 1 ? 40 + 30 * span : 0;
        const cx = (x0 + x1) / 2;
        const cy = (y0 + y1) / 2 - lift;
        d = `M ${x0} ${y0} Q ${cx} ${cy} ${x1} ${y1}`;
        const key = [L.site, R.site].join('\u0000');
        const k = crossCount.get(key) || 0;
        crossCount.set(key, k + 1);
        const t = 0.5 + [0, -0.16, 0.16, -0.3, 0.3][k % 5];
        lx = (1 - t) * (1 - t) * x0 + 2 * (1 - t) * t * cx + t * t * x1;
        ly = (1 - t) * (1 - t) * y0 + 2 * (1 - t) * t * cy + t * t * y1;
      }
      const label = p.state === 'down' ? 'down' : `${fmtRtt(p.rtt)} · ${fmtLoss(p.loss)}`;
      const detail = p.dirs
        .map((l) => `${l.from} → ${l.to}: ${l.up ? 'up' : 'down'}, RTT ${fmtRtt(l.rtt_ms)}, loss ${fmtLoss(l.loss_ratio)}, ${fmtBps(l.receive_bps)} received`)
        .concat(p.endGone ? [`${[p.a, p.b].filter((id) => goneIds.has(id)).join(' and ')} left the mesh`] : [])
        .join('\n');
      const attrs = {
        class: 'link',
        'data-from': p.a,
        'data-to': p.b,
        'data-state': p.state,
        'data-rtt-ms': p.rtt ?? '',
        'data-loss': p.loss ?? '',
        'data-label': label,
      };
      linkLayer.append(svg('g', attrs, svg('title', { text: detail }), svg('path', { d })));
      const w = label.length * 6.7 + 12;
      labelLayer.append(
        svg(
          'g',
          { class: 'link link-label', 'data-from': p.a, 'data-to': p.b, 'data-state': p.state },
          svg('title', { text: detail }),
          svg('rect', { x: lx - w / 2, y: ly - 9, width: w, height: 18, rx: 5 }),
          svg('text', { x: lx, y: ly + 4, 'text-anchor': 'middle', text: label }),
        ),
      );
    }

    const cp = mesh.control_plane || {};
    const cpOk = cp.reachable !== false;
    const cpLine = svg('text', {
      class: 'cp-line',
      'data-ok': String(cpOk),
      x: MAP.margin,
      y: 20,
      text: `control plane (${cp.kind ?? '?'}) ${cpOk ? 'reachable' : 'UNREACHABLE'} from ${mesh.node ?? 'this node'} · ${plural(rows.filter((r) => r.state !== 'gone').length, 'node')} live in ${plural(siteList.length, 'site')} · ${plural(pairs.length, 'link')}`,
    });
    const map = svg(
      'svg',
      { width, height, viewBox: `0 0 ${width} ${height}`, 'aria-labelledby': 'mesh-title' },
      cpLine,
      siteLayer,
      linkLayer,
      nodeLayer,
      labelLayer,
    );
    ui.meshMap.replaceChildren(map);
    ui.meshMap.setAttribute('aria-label', cpLine.textContent);
  }

  function recordHistory(mesh) {
    const now = Date.now();
    for (const n of mesh.nodes || []) {
      const load = n.load || {};
      if (!isNum(load.forward_latency_p99_us)) continue;
      const h = hooks.history[n.id] || (hooks.history[n.id] = []);
      h.push({ t: now, p50: isNum(load.forward_latency_p50_us) ? load.forward_latency_p50_us : null, p99: load.forward_latency_p99_us });
    }
    for (const [id, h] of Object.entries(hooks.history)) {
      while (h.length && now - h[0].t > HISTORY_MS) h.shift();
      if (!h.length) delete hooks.history[id];
    }
  }

  /** The p99 (and p50) line of `points` over the time they span (one minute at least, up to
   * HISTORY_MS), scaled to their highest p99 (100 µs at least). */
  function sparkline(points, now) {
    const W = 240;
    const H = 44;
    const top = Math.max(100, ...points.map((p) => p.p99 || 0));
    const span = Math.min(HISTORY_MS, Math.max(SPARK_MIN_SPAN_MS, now - points[0].t));
    const x = (t) => Math.max(0, ((t - (now - span)) / span) * W);
    const y = (v) => H - 3 - (v / top) * (H - 8);
    const line = (key) =>
      points
        .filter((p) => isNum(p[key]))
        .map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`)
        .join(' ');
    return svg(
      'svg',
      { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' },
      svg('polyline', { class: 'spark-p50', points: line('p50') }),
      svg('polyline', { class: 'spark-p99', points: line('p99') }),
    );
  }

  function renderLatency(rows) {
    const now = Date.now();
    const items = rows.filter((r) => hooks.history[r.id]);
    ui.latencyEmpty.hidden = items.length > 0;
    ui.latencyList.replaceChildren(
      ...items.map((r) => {
        const h = hooks.history[r.id];
        const last = h[h.length - 1];
        const max = Math.max(...h.map((p) => p.p99 || 0));
        const spark = sparkline(h, now);
        spark.setAttribute('aria-label', `forwarding latency p99 of ${r.id}, last ${HISTORY_MS / 60000} minutes, at most ${max} µs`);
        const figures = el(
          'div',
          { className: 'figures' },
          el('span', {}, 'p50 ', el('strong', { className: 'p50', text: `${fmtInt(last.p50)} µs` })),
          ' ',
          el('span', {}, 'p99 ', el('strong', { className: 'p99', text: `${fmtInt(last.p99)} µs` })),
          ' ',
          el('span', { text: `max ${fmtInt(max)} µs` }),
        );
        return el(
          'li',
          { 'data-node-id': r.id, 'data-state': r.state, 'data-p50': last.p50 ?? '', 'data-p99': last.p99, 'data-points': h.length },
          el('div', { className: 'who' }, r.id, el('small', { text: `site ${r.site}${r.state !== 'live' ? ` · ${r.state === 'gone' ? 'gone' : r.state}` : ''}` })),
          spark,
          figures,
        );
      }),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Rooms
  // ---------------------------------------------------------------------------------------------

  function renderRooms(body) {
    const rooms = (body && Array.isArray(body.rooms) ? body.rooms : []).slice();
    rooms.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    hooks.lastRooms = body;
    ui.roomsEmpty.hidden = rooms.length > 0;
    syncRows(
      ui.roomsBody,
      rooms,
      (r) => `${r.tenant ?? ''}\u0000${r.name}`,
      (r) => {
        const tr = el('tr', { 'data-room': r.name });
        const open = el('button', { type: 'button', className: 'link-btn', 'data-open-room': r.name, 'aria-label': `Show participants of room ${r.name}`, text: r.name });
        open.addEventListener('click', () => openRoom(r.name));
        tr.append(el('th', { scope: 'row', className: 'name' }, open));
        for (const cls of ['tenant', 'nodes', 'participants num', 'tracks num']) tr.append(el('td', { className: cls }));
        return tr;
      },
      (tr, r) => {
        const cell = (cls) => tr.querySelector(`.${cls}`);
        tr.dataset.selected = String(r.name === selectedRoom);
        tr.querySelector('button').setAttribute('aria-expanded', String(r.name === selectedRoom));
        cell('tenant').textContent = r.tenant ?? '—';
        cell('nodes').textContent = Array.isArray(r.nodes) ? r.nodes.join(', ') : '';
        cell('participants').textContent = fmtInt(r.participants);
        cell('tracks').textContent = fmtInt(r.tracks);
      },
    );
  }

  function openRoom(name) {
    if (selectedRoom === name) {
      closeRoom();
      return;
    }
    selectedRoom = name;
    hooks.lastRoom = null;
    ui.roomDetailTitle.textContent = `Room ${name}`;
    ui.roomTracks.textContent = 'Loading…';
    ui.participantsBody.replaceChildren();
    ui.participantsEmpty.hidden = true;
    ui.roomDetailStatus.textContent = '';
    ui.roomDetail.hidden = false;
    for (const tr of ui.roomsBody.children) {
      const on = tr.dataset.room === name;
      tr.dataset.selected = String(on);
      tr.querySelector('button').setAttribute('aria-expanded', String(on));
    }
    pollNow();
  }

  function closeRoom() {
    selectedRoom = null;
    hooks.lastRoom = null;
    ui.roomDetail.hidden = true;
    for (const tr of ui.roomsBody.children) {
      tr.dataset.selected = 'false';
      tr.querySelector('button').setAttribute('aria-expanded', 'false');
    }
  }

  function detailStatus(text, kind) {
    ui.roomDetailStatus.textContent = text;
    ui.roomDetailStatus.dataset.kind = kind || 'info';
  }

  function renderRoom(name, r) {
    if (r.status === 404) {
      hooks.lastRoom = { name, gone: true };
      ui.roomTracks.textContent = '';
      ui.participantsBody.replaceChildren();
      ui.participantsEmpty.hidden = true;
      ui.endRoom.disabled = true;
      detailStatus(`Room ${name} is not open any more.`);
      return;
    }
    if (!r.ok) {
      detailStatus(`Could not load room ${name}: ${errorText(r)}`, 'error');
      recordError('api', `room ${name}: ${errorText(r)}`, r.status);
      return;
    }
    const room = r.body || {};
    hooks.lastRoom = room;
    ui.endRoom.disabled = false;
    const tracks = Array.isArray(room.tracks) ? room.tracks : [];
    const kinds = {};
    for (const t of tracks) kinds[t.kind] = (kinds[t.kind] || 0) + 1;
    const byKind = Object.entries(kinds)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ');
    ui.roomTracks.textContent = `Tenant ${room.tenant ?? '—'} · ${tracks.length} track${tracks.length === 1 ? '' : 's'}${byKind ? ` (${byKind})` : ''}`;
    const people = (Array.isArray(room.participants) ? room.participants : []).slice();
    people.sort((a, b) => String(a.name).localeCompare(String(b.name)) || String(a.id).localeCompare(String(b.id)));
    ui.participantsEmpty.hidden = people.length > 0;
    syncRows(
      ui.participantsBody,
      people,
      (p) => p.id,
      (p) => {
        const tr = el('tr', { 'data-participant-id': p.id });
        tr.append(el('th', { scope: 'row', className: 'name' }));
        for (const cls of ['pid', 'role', 'node', 'action']) tr.append(el('td', { className: cls }));
        const remove = el('button', { type: 'button', className: 'btn danger small', 'data-remove': p.id, text: 'Remove' });
        remove.addEventListener('click', () => removeParticipant(p.id));
        tr.querySelector('.action').append(remove);
        return tr;
      },
      (tr, p) => {
        const cell = (cls) => tr.querySelector(`.${cls}`);
        tr.dataset.role = p.role ?? '';
        tr.dataset.node = p.node ?? '';
        tr.dataset.name = p.name ?? '';
        cell('name').textContent = p.name || '(no name)';
        cell('pid').textContent = p.id;
        cell('role').textContent = p.role ?? '–';
        cell('node').textContent = p.node ?? '–';
        tr.querySelector('button[data-remove]').setAttribute('aria-label', `Remove ${p.name || p.id} from room ${name}`);
      },
    );
  }

  async function removeParticipant(id) {
    const room = selectedRoom;
    if (room === null) return;
    const p = ((hooks.lastRoom && hooks.lastRoom.participants) || []).find((x) => x.id === id);
    const who = p && p.name ? `${p.name} (${id})` : id;
    if (!window.confirm(`Remove ${who} from room ${room}?`)) return;
    await roomAction('remove', room, id, 'DELETE', `api/admin/rooms/${seg(room)}/participants/${seg(id)}`, `${who} removed from ${room}.`);
  }

  async function endRoom() {
    const room = selectedRoom;
    if (room === null) return;
    if (!window.confirm(`End room ${room} for everyone? Every participant on every node leaves the meeting.`)) return;
    await roomAction('end', room, null, 'DELETE', `api/admin/rooms/${seg(room)}`, `Room ${room} is ending.`);
  }

  async function roomAction(action, room, participant, method, path, done) {
    let r;
    try {
      r = await api(method, path);
    } catch (e) {
      detailStatus(`Not sent: node unreachable (${e.message}).`, 'error');
      recordError('network', e.message, null);
      return;
    }
    const status = r.body && typeof r.body === 'object' ? r.body.status ?? null : null;
    hooks.actions.push({ action, room, participant, httpStatus: r.status, status, at: Date.now() });
    if (r.status === 401) {
      askSignIn('The node refused the sign-in (expired or revoked); sign in again.');
      return;
    }
    if (r.ok) {
      detailStatus(done);
      notice(done);
    } else {
      detailStatus(`Refused: ${errorText(r)}`, 'error');
      recordError('action', `${action} ${room}: ${errorText(r)}`, r.status);
    }
    pollNow();
  }

  // ---------------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------------

  ui.loginForm.addEventListener('submit', submitLogin);
  ui.signOut.addEventListener('click', signOut);
  ui.endRoom.addEventListener('click', endRoom);
  ui.closeRoom.addEventListener('click', closeRoom);

  const fromUrl = takeUrlToken();
  if (fromUrl) storeAuth(fromUrl);
  const stored = fromUrl || loadStoredAuth();
  if (stored && expired(stored)) {
    clearStoredAuth();
    askSignIn('Your sign-in expired; sign in again.');
  } else {
    // Without a credential the node may still answer (--insecure-dev, loopback); a 401 asks.
    start(stored);
  }
})();
