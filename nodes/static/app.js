// Kaskade web client: joins a room over the node's WebSocket signalling (`/ws`, see
// proto/src/signal.rs and docs/signalling.md), publishes microphone, camera and screen on a
// client-offered *publish* RTCPeerConnection and receives everyone else's tracks on a node-offered
// *subscribe* RTCPeerConnection. Plain browser JavaScript, no build step, no external resources.
// With access control on the node, every `join` carries an access token: from the page's
// `?token=` (an invite link) or from a login (`POST /api/login`) kept in sessionStorage.
// With a room passphrase (join form, `#e2ee=` / `?e2ee=`) media is end-to-end encrypted with
// encoded transforms: the node forwards frames it cannot read (see "End-to-end encryption").
// Room protection: a room password asked for at join (`password_required`, kept in memory only),
// the lobby (`lobby_waiting` until a host admits or denies), bans; hosts get the controls for
// them in the host panel (lobby switch and waiting list, password, "Remove and ban").
'use strict';

(function () {
  // ---------------------------------------------------------------------------------------------
  // Constants (mirroring proto/src/signal.rs)
  // ---------------------------------------------------------------------------------------------

  const MAX_CHAT_LEN = 4096;
  const MAX_NAME_LEN = 64;
  const SOURCES = ['camera', 'microphone', 'screen', 'screen_audio', 'unknown'];
  const LAYERS = ['low', 'medium', 'high'];
  const ROLES = ['host', 'speaker', 'audience'];
  const ROLE_LABELS = { host: 'Host', speaker: 'Speaker', audience: 'Audience' };
  const NOTICE_HIDE_MS = 7000; // informational notices (not errors) disappear after this long
  const QUALITY_POLL_MS = 1000; // how often tiles' received resolution indicators are refreshed
  const ERROR_HIDE_MS = 6000; // non-fatal error banners disappear after this long
  const ANSWER_TIMEOUT_MS = 15000; // give up waiting for a publish_answer after this long
  const UNKNOWN_TRACK_GRACE_MS = 2000; // wait this long for track_published before showing a video anyway
  // Failover: media must be back within ~2 s of a node's death, so a node that does not accept the
  // socket quickly is skipped at once; a node may take longer to answer `join` (placement).
  const CONNECT_TIMEOUT_MS = 1500;
  const JOIN_REPLY_TIMEOUT_MS = 5000;
  const UNAVAILABLE_RETRY_MS = 2000; // retry a join the mesh refused as `unavailable` after this long
  const MOVE_GIVE_UP_MS = 30000; // stop looking for a node to continue the call on after this long
  const MOVE_BACKOFF_MS = [250, 500, 1000]; // pause after each full pass over the candidates (±25 %)
  const MAX_REDIRECTS = 3; // redirects followed per join attempt (a loop guard)
  const STALE_TILE_MS = 4000; // keep a remote video's last frame this long while its successor comes
  const REPAIR_MIN_INTERVAL_MS = 15000; // rejoin to repair a broken subscribe connection at most this often
  // Shown for `room_locked` (join refused, near the join form) and `meeting_ended` (the call is over).
  const ROOM_LOCKED_TEXT = 'This room is locked; ask a host to unlock it.';
  const MEETING_ENDED_TEXT = 'The host ended the meeting.';
  // Room protection: the lobby (a host lets newcomers in), a host's ban, the room password.
  const LOBBY_DENIED_TEXT = 'A host did not let you in.';
  const BANNED_TEXT = 'A host removed you from this room; you cannot join it again.';
  const MAX_ROOM_PASSWORD_BYTES = 256; // the node refuses longer room passwords
  const PASSWORD_REPLY_MS = 10000; // how long an error counts as the answer to set_room_password
  const PASSWORD_ERROR_CODES = ['bad_request', 'forbidden', 'unavailable', 'unknown_room', 'rate_limited', 'internal'];
  // Access control (nodes/src/auth): login answers, token storage, what the node calls roles.
  const AUTH_STORAGE_KEY = 'kaskade.auth'; // sessionStorage: this tab's login, see storeAuth()
  const ACCOUNT_ROLES = ['operator', 'tenant_admin', 'host', 'participant', 'guest'];
  const GRANTS = ['publish', 'subscribe', 'moderate', 'create_rooms', 'admin'];
  const MAX_TOKEN_LEN = 4096; // the node refuses longer access tokens
  const MAX_TIMER_MS = 2147483647; // setTimeout's limit (~24.8 days)
  const CAMERA_ENCODINGS = [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: 'f', maxBitrate: 1500000 },
  ];

  // ---------------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);
  const isStr = (v) => typeof v === 'string';
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const okKey = (k) => isStr(k) && k.length > 0 && k !== '__proto__' && k !== 'constructor' && k !== 'prototype';
  const has = (obj, k) => okKey(k) && Object.prototype.hasOwnProperty.call(obj, k);

  /** A `{mid: track id}` map from the wire, keeping only well-formed string entries. */
  function midMap(v) {
    const out = {};
    if (!isObj(v)) return out;
    for (const k of Object.keys(v)) {
      if (okKey(k) && isStr(v[k]) && v[k]) out[k] = v[k];
    }
    return out;
  }

  /** A TrackInfo from the wire, or null if it is malformed. */
  function trackInfo(v) {
    if (!isObj(v) || !okKey(v.id) || !isStr(v.participant)) return null;
    return {
      id: v.id,
      participant: v.participant,
      kind: v.kind === 'audio' ? 'audio' : 'video',
      source: SOURCES.includes(v.source) ? v.source : 'unknown',
      layers: Array.isArray(v.layers) ? v.layers.filter(isStr) : [],
      muted: v.muted === true,
    };
  }

  /** A ParticipantInfo from the wire: {id, name, role, handRaisedAt (ms since epoch or null)}. */
  function participantInfo(v) {
    if (!isObj(v) || !okKey(v.id)) return null;
    const at = v.hand_raised_at;
    return {
      id: v.id,
      name: isStr(v.name) ? v.name : '',
      role: ROLES.includes(v.role) ? v.role : 'speaker',
      handRaisedAt: typeof at === 'number' && Number.isFinite(at) ? at : null,
    };
  }

  /** RoomSettings from the wire. */
  function roomSettings(v) {
    return {
      only_hosts_publish: isObj(v) && v.only_hosts_publish === true,
      locked: isObj(v) && v.locked === true,
      lobby: isObj(v) && v.lobby === true,
    };
  }

  /** A `lobby_changed` list from the wire: [{participant, name}], malformed entries left out. */
  function lobbyList(v) {
    if (!Array.isArray(v)) return [];
    const out = [];
    for (const w of v) {
      if (isObj(w) && okKey(w.participant) && !out.some((o) => o.participant === w.participant)) {
        out.push({ participant: w.participant, name: isStr(w.name) ? w.name : '' });
      }
    }
    return out;
  }

  /** UTF-8 length of a string (the node's limits are in bytes). */
  const utf8Length = (t) => new TextEncoder().encode(t).length;

  /** A non-negative count from the wire, else 0. */
  function count(v) {
    return typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0;
  }

  const mayPublish = (role) => role === 'host' || role === 'speaker';

  function svgIcon(paths) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'icon');
    svg.setAttribute('aria-hidden', 'true');
    for (const d of paths) {
      const p = document.createElementNS(ns, 'path');
      p.setAttribute('d', d);
      svg.appendChild(p);
    }
    return svg;
  }
  const MIC_OFF_PATHS = ['M9 6a3 3 0 0 1 6 0v5a3 3 0 0 1-6 0z', 'M5 11a7 7 0 0 0 14 0', 'M12 18v3', 'M4 4l16 16'];

  function initial(name) {
    const t = (name || '').trim();
    return t ? Array.from(t)[0].toUpperCase() : '?';
  }

  function wsUrl() {
    const u = new URL('ws', window.location.href);
    u.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = '';
    u.hash = '';
    return u.toString();
  }

  /** A node's WebSocket URL from the wire (`ws:`/`wss:`, or its `http:`/`https:` origin), or null. */
  function socketUrl(v) {
    if (!isStr(v) || !v) return null;
    let u;
    try {
      u = new URL(v, window.location.href);
    } catch (_) {
      return null;
    }
    if (u.protocol === 'http:' || u.protocol === 'https:') {
      // A node's page origin: its signalling endpoint is `/ws` below it.
      u = new URL(`${u.pathname.replace(/\/?$/, '/')}ws`, u);
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    }
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return null;
    u.hash = '';
    return u.toString();
  }

  /** The URLs in order, each once, malformed ones left out. */
  function uniqueUrls(list) {
    const out = [];
    for (const v of list) {
      const u = socketUrl(v);
      if (u && !out.includes(u)) out.push(u);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------------

  /** The directories and negotiation maps of the current session (exposed as kaskade.state). */
  function emptyState() {
    return {
      room: null,
      name: null,
      participantId: null,
      participants: {}, // participant id -> {id, name, role, handRaisedAt}
      tracks: {}, // track id -> TrackInfo {id, participant, kind, source, layers, muted}
      subscribeTracks: {}, // mid -> track id, from the latest subscribe_offer
      published: {}, // mid -> own track id, from the latest publish_answer
      publishedSources: {}, // mid -> source, as sent in the latest publish_offer
      role: null, // our role as the node granted it: 'host' | 'speaker' | 'audience'
      settings: { only_hosts_publish: false, locked: false, lobby: false }, // the room's settings
      lobby: [], // hosts: who waits in the lobby, [{participant, name}] (from `lobby_changed`)
      roomProtected: null, // hosts: whether the room has a password (from `room_password_set`), null: unknown
      audience: 0, // audience members in the room (from `joined` / `audience_count`)
      dominantSpeaker: null, // participant id of who speaks now, if anyone
      receiveQuality: null, // latest `receive_quality`: {estimate_bps, layers: {track id: index}}
      layersSent: null, // dynacast: which camera layers we send (lowest first), after publish_layers
    };
  }

  let state = emptyState();
  let call = null; // the current call: what outlives a move from one node to another
  let sess = null; // the current session (one WebSocket + its two peer connections)
  let sessionCounter = 0;
  let mediaGenerations = 0; // counts tracks given to tiles, see stats().mediaGeneration
  let lastState = 'idle';
  let siteParam = null; // `?site=` of the page: the site the user wants to be served from
  let relayOnly = false; // `?relay=1`: media only through the node's TURN servers (checks a TURN set-up)
  let auth = null; // the access token the page sends and who it says we are, see authRecord()
  let urlToken = null; // `?token=` of the page (an invite link) until it expires, fails or we log out
  let loginRequired = false; // the node answered `unauthorized` and no login succeeded since
  let pendingJoin = false; // join again as soon as a login succeeds
  let loginBusy = false; // a POST /api/login is under way
  let authTimer = null; // drops the token when it expires
  let typedName = null; // the name typed in the form while an account's name replaces it
  let authGone = ''; // why the page has no token any more (it expired), for the login form
  // Room passwords typed in this page, by room: kept in memory only (never in the URL, storage or
  // the console) so that "Join again" and a rejoin during a move need not ask again.
  const roomPasswords = new Map();
  let passwordRoom = null; // the room whose password the password form asks for
  let passwordPending = null; // hosts: {timer} while a set_room_password awaits its answer
  /** What kaskade.auth shows: one object, kept current (see syncAuthView()). */
  const authView = {
    loggedIn: false,
    user: null,
    role: null,
    tenant: null,
    name: null,
    source: null, // 'login' (POST /api/login) | 'invite' (`?token=`) | null
    expiresAt: null, // unix seconds, or null when unknown
    loginRequired: false,
    loginShown: false,
  };

  /**
   * One call, from Join to Leave (or a fatal error). It survives moves between nodes: the local
   * media, the resume token and the list of other nodes belong here, not to a session.
   */
  function newCall(room, name, wantMic, wantCam, requestedRole) {
    return {
      room,
      name,
      site: siteParam,
      wantMic,
      wantCam,
      // Sent as `join.role`: 'audience' when the user asked to watch only (and while the node
      // keeps us in the audience, so a rejoin as a new participant stays there), else none.
      requestedRole: requestedRole || null,
      // Promise<{stream, mic, cam}>: acquired at join (or when promoted out of the audience),
      // released when the node makes us audience; see ensureMedia() / releaseMedia().
      media: null,
      mediaGen: 0, // bumped by releaseMedia(): a getUserMedia that resolves later is dropped
      handRaisedAt: null, // our raised hand as the node knows it (ms since epoch), or null
      resumeToken: '', // from the latest `joined`; sent as `resume` when moving
      alternates: [], // other nodes' WebSocket URLs from the latest `joined`, best first
      ended: false,
      participantId: null, // ours, from the latest `joined` (kept across moves when resumed)
      link: null, // the search for a node under way, see startLink()
      reconnects: 0, // moves started (node lost or `reconnect` asked)
      reconnectStartedAt: null, // performance.now() when the latest move started
      firstFrameAt: null, // performance.now() of the first remote video frame after that move
      awaitingFrame: false,
      repairedAt: null, // performance.now() of the latest rejoin to repair the session
      tokenSent: null, // the access token of the latest `join` sent (to tell which one a refusal is about)
      password: null, // the room password sent with every `join` of this call (see roomPasswords)
      passwordSent: false, // the latest `join` carried it (a refusal then means it is wrong)
      lobby: false, // the node keeps us in its lobby until a host lets us in
      // End-to-end encryption: {mode, key} (the key is derived before the first node is asked),
      // or null when the call is not end-to-end encrypted. Kept across moves.
      e2ee: null,
    };
  }

  function newSession() {
    return {
      id: ++sessionCounter,
      url: null, // the node's WebSocket URL (after redirects)
      ws: null,
      joinTimer: null, // connect / join-reply timeout while joining
      redirects: 0,
      publishPc: null,
      subscribePc: null,
      joined: false,
      closed: false,
      leaving: false,
      inherited: false, // local media taken over from the previous session (a move)
      local: { mic: null, cam: null, screen: null }, // {track, transceiver, muted, stream?}
      sources: new Map(), // publish transceiver -> TrackSource
      mutedSent: {}, // own track id -> last muted value sent
      pubStarted: false, // startPublishing() ran (until the node closes our publish connection)
      pub: { busy: false, again: false, restart: false, pending: null },
      subQueue: Promise.resolve(),
      tiles: new Map(), // track id -> {el, video, receiver, track, staleUntil, ...}
      audios: new Map(), // track id -> {el, receiver, track}
      gone: new Set(), // track ids unpublished or of participants who left
      firstSeen: new Map(), // track id -> time its media arrived without directory entry
      graceTimer: null,
      staleTimer: null,
      pendingChat: [], // own chat messages shown locally, awaiting the node's echo
    };
  }

  const live = (s) => s !== null && s === sess && !s.closed;

  // ---------------------------------------------------------------------------------------------
  // DOM references, status and errors
  // ---------------------------------------------------------------------------------------------

  const ui = {};
  let errorTimer = null;

  function setState(s) {
    lastState = s;
    document.body.dataset.state = s;
    const inCall = s === 'joined';
    ui.joinView.hidden = inCall;
    ui.callView.hidden = !inCall;
    ui.roomLabel.hidden = !inCall;
    // Waiting in the lobby: the waiting screen instead of the join form; a room password asked
    // for: its form above the join form.
    ui.joinForm.hidden = s === 'lobby';
    ui.lobbyWait.hidden = s !== 'lobby';
    ui.roomPasswordForm.hidden = s !== 'password';
    ui.join.disabled = s === 'joining';
    ui.join.textContent =
      s === 'joining'
        ? 'Joining\u2026'
        : s === 'locked'
          ? 'Try again'
          : s === 'left' || s === 'removed' || s === 'ended'
            ? 'Join again'
            : 'Join';
    if (s === 'joining') ui.joinNote.textContent = '';
    if (inCall) {
      // The node took us in: whatever asked for a login is over.
      loginRequired = false;
      hideLogin();
    }
    if (s === 'left') ui.joinNote.textContent = 'You left the room.';
    renderE2ee();
    if (!inCall) {
      ui.roleLabel.hidden = true;
      ui.lockedLabel.hidden = true;
      ui.lobbyLabel.hidden = true;
      ui.audienceCount.hidden = true;
      ui.receiveEstimate.hidden = true;
      hideNotice();
    }
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function updateStatus() {
    const moving = movingWhy();
    if (moving) {
      // No error banner while moving: the call goes on, the status says what is happening.
      const text = {
        drain: 'Moving to another server\u2026',
        lost: 'Connection lost \u00b7 reconnecting\u2026',
        repair: 'Reconnecting\u2026',
      };
      setStatus(text[moving] || text.repair);
      return;
    }
    const s = sess;
    if (!s || !s.joined || s.closed) return;
    const n = Object.keys(state.participants).length;
    const parts = [`${n} participant${n === 1 ? '' : 's'}`];
    const media = [];
    if (s.publishPc) media.push(`sending ${pcState(s.publishPc)}`);
    if (s.subscribePc) media.push(`receiving ${pcState(s.subscribePc)}`);
    if (media.length) parts.push(media.join(', '));
    setStatus(`Connected \u00b7 ${parts.join(' \u00b7 ')}`);
  }

  function pcState(pc) {
    return pc.connectionState || pc.iceConnectionState || 'new';
  }

  /** Shows `text` in the error banner; non-fatal messages hide themselves after a few seconds. */
  function showError(text, fatal) {
    if (!fatal && movingWhy()) {
      // Hiccups of the node being left behind; the move itself reports through the status.
      console.warn(`kaskade: (while moving) ${text}`);
      return;
    }
    ui.errorBanner.textContent = text;
    ui.errorBanner.hidden = false;
    ui.errorBanner.dataset.fatal = fatal ? 'true' : 'false';
    if (errorTimer) clearTimeout(errorTimer);
    errorTimer = null;
    if (!fatal) {
      errorTimer = setTimeout(() => {
        ui.errorBanner.hidden = true;
        errorTimer = null;
      }, ERROR_HIDE_MS);
    }
  }

  function hideError() {
    if (errorTimer) clearTimeout(errorTimer);
    errorTimer = null;
    ui.errorBanner.hidden = true;
  }

  function describe(e) {
    return (e && (e.message || e.name)) || String(e);
  }

  // ---------------------------------------------------------------------------------------------
  // Access control: the access token, login, logout
  // ---------------------------------------------------------------------------------------------

  const nowSecs = () => Date.now() / 1000;

  /** "room x does not exist; …" -> "Room x does not exist; ….": a node's message as a sentence. */
  function sentence(text) {
    const t = String(text || '').trim();
    if (!t) return t;
    const s = t[0].toUpperCase() + t.slice(1);
    return /[.!?]$/.test(s) ? s : `${s}.`;
  }

  /** The claims of a JWT, unverified (the node checks them): for display and expiry only. */
  function tokenClaims(token) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
      const v = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (ch) => ch.charCodeAt(0))));
      return isObj(v) ? v : null;
    } catch (_) {
      return null;
    }
  }

  /**
   * An access token and who it says we are, from a login answer (or its stored copy) or from an
   * invite token's claims; null if malformed. `source`: 'login' | 'invite'.
   */
  function authRecord(v, source) {
    if (!isObj(v) || !isStr(v.token) || !v.token || v.token.length > MAX_TOKEN_LEN) return null;
    const exp = v.expires_at;
    const grants = {};
    for (const g of GRANTS) grants[g] = isObj(v.grants) && v.grants[g] === true;
    return {
      token: v.token,
      source,
      expiresAt: typeof exp === 'number' && Number.isFinite(exp) ? exp : null,
      user: isStr(v.user) && v.user ? v.user : null,
      tenant: isStr(v.tenant) && v.tenant ? v.tenant : null, // none for operators
      name: isStr(v.name) ? v.name : '',
      role: ACCOUNT_ROLES.includes(v.role) ? v.role : null,
      room: isStr(v.room) && v.room ? v.room : null, // invites are good for one room
      grants,
    };
  }

  /** The auth record of a `?token=` (an invite link from a host). */
  function inviteRecord(token) {
    const c = tokenClaims(token) || {};
    const v = { token, expires_at: c.exp, user: c.sub, tenant: c.tenant, name: c.name, role: c.role, room: c.room };
    return authRecord(Object.assign(v, { grants: c.grants }), 'invite');
  }

  const expired = (a) => a.expiresAt !== null && a.expiresAt <= nowSecs();

  /** This tab's login from sessionStorage: {auth, expired} (an expired one is dropped). */
  function loadStoredAuth() {
    let v = null;
    try {
      const raw = window.sessionStorage.getItem(AUTH_STORAGE_KEY);
      v = raw ? JSON.parse(raw) : null;
    } catch (_) {
      v = null; // storage off, or not JSON: as if there were none
    }
    const a = authRecord(v, 'login');
    if (v !== null && (!a || expired(a))) {
      clearStoredAuth();
      return { auth: null, expired: !!a };
    }
    return { auth: a, expired: false };
  }

  /** Keeps a login's answer for this tab (the token and who we are; never the password). */
  function storeAuth(a) {
    const v = { token: a.token, expires_at: a.expiresAt, user: a.user, tenant: a.tenant, name: a.name, role: a.role, grants: a.grants };
    try {
      window.sessionStorage.setItem(AUTH_STORAGE_KEY, JSON.stringify(v));
    } catch (e) {
      console.warn('kaskade: cannot keep the login in sessionStorage', describe(e));
    }
  }

  function clearStoredAuth() {
    try {
      window.sessionStorage.removeItem(AUTH_STORAGE_KEY);
    } catch (_) {
      /* storage off */
    }
  }

  /** Takes `?token=` out of the address bar (a reload then uses this tab's login, if any). */
  function dropUrlToken() {
    try {
      const u = new URL(window.location.href);
      if (!u.searchParams.has('token')) return;
      u.searchParams.delete('token');
      window.history.replaceState(window.history.state, '', u.toString());
    } catch (_) {
      /* no history API */
    }
  }

  /** Makes `a` (or none) the token the page sends; drops it again when it expires. */
  function setAuth(a) {
    auth = a || null;
    if (auth) authGone = '';
    if (authTimer) clearTimeout(authTimer);
    authTimer = null;
    if (auth && auth.expiresAt !== null) {
      const it = auth;
      const ms = Math.max(0, it.expiresAt * 1000 - Date.now()) + 500;
      authTimer = setTimeout(() => {
        authTimer = null;
        if (auth !== it) return;
        if (expired(it)) authExpired();
        else setAuth(it); // a longer wait than one timer allows
      }, Math.min(ms, MAX_TIMER_MS));
    }
    renderAuth();
    applyAccountName();
  }

  /** The access token for the next `join`, or null; an expired one is dropped first. */
  function accessToken() {
    if (auth && expired(auth)) authExpired();
    return auth ? auth.token : null;
  }

  /** Stops using `a`: an invite leaves the URL (this tab's login takes over), a login the storage. */
  function forgetAuth(a) {
    if (a.source === 'invite') {
      urlToken = null;
      dropUrlToken();
      setAuth(loadStoredAuth().auth);
    } else {
      clearStoredAuth();
      setAuth(null);
    }
  }

  /** The token's time is up: forget it and ask for a login (unless this tab's login takes over). */
  function authExpired() {
    const a = auth;
    if (!a) return;
    console.info(`kaskade: the ${a.source === 'invite' ? 'invite link' : 'login'} has expired`);
    forgetAuth(a);
    if (auth) return;
    authGone =
      a.source === 'invite'
        ? 'This invite link has expired. Ask the host for a new one, or log in.'
        : 'Your login has expired. Log in again.';
    showLogin(authGone);
  }

  /** "Logged in as Ada (host, school)"; an invite: "Invited as guest (school, room r1)". */
  function authText(a) {
    if (a.source === 'invite' && (a.role === 'guest' || !a.role || !a.name)) {
      const where = [a.tenant, a.room ? `room ${a.room}` : null].filter(Boolean);
      return `Invited as ${a.role || 'guest'}${where.length ? ` (${where.join(', ')})` : ''}`;
    }
    const details = [a.role || 'unknown role', a.tenant].filter(Boolean);
    return `Logged in as ${a.name || a.user || '?'} (${details.join(', ')})`;
  }

  function renderAuth() {
    const a = auth;
    ui.loginStatus.hidden = !a;
    ui.logout.hidden = !a;
    ui.loginStatus.textContent = a ? authText(a) : '';
    ui.loginStatus.title = a && a.expiresAt !== null ? `Valid until ${new Date(a.expiresAt * 1000).toLocaleString()}` : '';
    syncAuthView();
  }

  /** Brings kaskade.auth up to date. */
  function syncAuthView() {
    const a = auth;
    authView.loggedIn = !!a;
    authView.user = a ? a.user : null;
    authView.role = a ? a.role : null;
    authView.tenant = a ? a.tenant : null;
    authView.name = a ? a.name : null;
    authView.source = a ? a.source : null;
    authView.expiresAt = a ? a.expiresAt : null;
    authView.loginRequired = loginRequired;
    authView.loginShown = !!ui.loginForm && !ui.loginForm.hidden;
  }

  /** Accounts join under their own name (the node uses it); guests choose theirs. */
  function applyAccountName() {
    const a = auth;
    const account = a && a.role && a.role !== 'guest' && a.name ? Array.from(a.name).slice(0, MAX_NAME_LEN).join('') : null;
    if (account) {
      if (typedName === null) typedName = ui.name.value;
      ui.name.value = account;
      ui.name.readOnly = true;
      ui.name.title = 'Your account\u2019s name: the node uses it';
    } else if (typedName !== null) {
      ui.name.value = typedName;
      typedName = null;
      ui.name.readOnly = false;
      ui.name.title = '';
    }
  }

  /** Shows the login form; `reason` (if given) says why, '' restores the default text. */
  function showLogin(reason) {
    const wasHidden = ui.loginForm.hidden;
    ui.loginForm.hidden = false;
    if (reason !== undefined) ui.loginReason.textContent = reason || ui.loginReasonDefault;
    ui.loginError.textContent = '';
    syncAuthView();
    if (wasHidden && lastState !== 'joined') focusLogin();
  }

  function hideLogin() {
    ui.loginForm.hidden = true;
    ui.loginError.textContent = '';
    ui.loginPassword.value = '';
    syncAuthView();
  }

  function focusLogin() {
    if (ui.loginUser.value) ui.loginPassword.focus();
    else (ui.loginTenant.value ? ui.loginUser : ui.loginTenant).focus();
  }

  /**
   * The node wants an access token (none, expired, invalid, or not good for this room): ends the
   * attempt without an error banner, shows the login form and joins again once a login succeeds.
   */
  function loginToJoin(c, s, message) {
    const sent = c.tokenSent;
    let reason;
    let retry = false;
    if (!sent) {
      reason = authGone || 'This server needs an account: log in (or use an invite link from a host) to join a room.';
    } else if (auth && auth.token === sent && /expired|invalid|longer than/i.test(message)) {
      // The token itself is no good (not just for this room): stop sending it.
      const invite = auth.source === 'invite';
      forgetAuth(auth);
      // An invite that failed gives way to this tab's login, if there is one: try that once.
      retry = !!auth && auth.token !== sent;
      reason = `${sentence(message)} ${invite ? 'Ask the host for a new invite link, or log in.' : 'Log in again.'}`;
    } else {
      reason = `${sentence(message)} Log in with another account, or ask the host for an invite link.`;
    }
    console.warn(`kaskade: the node wants a login to join ${c.room}: ${message}`);
    closeTransport(s);
    cancelLink(c);
    c.ended = true;
    if (sess) teardown(sess);
    stopMedia(c);
    delete document.body.dataset.moving;
    if (retry) {
      join();
      return;
    }
    loginRequired = true;
    pendingJoin = true;
    setState('unauthorized');
    setStatus('Log in to join');
    ui.joinNote.textContent = `Log in to join room \u201c${c.room}\u201d.`;
    showLogin(reason);
  }

  /** POST /api/login: {ok: true, auth} or {ok: false, error} (a message for the user). */
  async function requestLogin(tenant, user, password) {
    const body = { user, password };
    if (tenant) body.tenant = tenant;
    let resp;
    try {
      resp = await fetch(new URL('api/login', window.location.href).toString(), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (e) {
      return { ok: false, error: `Could not reach the server: ${describe(e)}` };
    }
    if (resp.ok) {
      let v = null;
      try {
        v = await resp.json();
      } catch (_) {
        v = null;
      }
      const a = authRecord(v, 'login');
      return a ? { ok: true, auth: a } : { ok: false, error: 'The server sent an invalid login answer.' };
    }
    if (resp.status === 401) return { ok: false, error: 'Wrong user, organisation or password' };
    if (resp.status === 429) {
      // Retry-After: seconds (what the node sends) or an HTTP date.
      const h = (resp.headers.get('Retry-After') || '').trim();
      let secs = /^\d+$/.test(h) ? Number(h) : NaN;
      if (!Number.isFinite(secs) && h && Number.isFinite(Date.parse(h))) secs = Math.max(0, Math.ceil((Date.parse(h) - Date.now()) / 1000));
      if (Number.isFinite(secs)) return { ok: false, error: `Too many failed logins; try again in ${secs} s` };
    }
    let text = '';
    try {
      text = (await resp.text()).trim();
    } catch (_) {
      text = '';
    }
    return { ok: false, error: text ? text.slice(0, 500) : `Login failed (HTTP ${resp.status}).` };
  }

  /** The login form's submit: logs in, keeps the token for this tab, joins again if refused before. */
  async function submitLogin() {
    if (loginBusy) return false;
    const tenant = ui.loginTenant.value.trim().toLowerCase(); // organisation ids are lower case
    const user = ui.loginUser.value.trim();
    if (!user) {
      ui.loginError.textContent = 'Enter your user id.';
      ui.loginUser.focus();
      return false;
    }
    if (!ui.loginPassword.value) {
      ui.loginError.textContent = 'Enter your password.';
      ui.loginPassword.focus();
      return false;
    }
    const password = ui.loginPassword.value;
    ui.loginPassword.value = ''; // the page keeps the password no longer than the request
    ui.loginTenant.value = tenant;
    loginBusy = true;
    ui.loginSubmit.disabled = true;
    ui.loginSubmit.textContent = 'Logging in\u2026';
    ui.loginError.textContent = '';
    let r;
    try {
      r = await requestLogin(tenant, user, password);
    } finally {
      loginBusy = false;
      ui.loginSubmit.disabled = false;
      ui.loginSubmit.textContent = 'Log in';
    }
    if (!r.ok) {
      console.warn(`kaskade: login of ${tenant ? `${tenant}/` : ''}${user} failed: ${r.error}`);
      ui.loginError.textContent = r.error;
      ui.loginPassword.focus();
      return false;
    }
    console.info(`kaskade: logged in as ${r.auth.user || user} (${r.auth.role || '?'})`);
    onLoggedIn(r.auth);
    return true;
  }

  function onLoggedIn(a) {
    storeAuth(a);
    if (urlToken) {
      // An explicit login wins over the invite link; a reload keeps it.
      urlToken = null;
      dropUrlToken();
    }
    loginRequired = false;
    setAuth(a);
    hideLogin();
    const again = pendingJoin;
    pendingJoin = false;
    if (again && (!call || call.ended)) join();
    else if (lastState !== 'joined') (ui.room.value ? ui.join : ui.room).focus();
  }

  /** Log out: leaves the room if in one, forgets the token (login or invite), shows the login form. */
  function logout() {
    const a = auth;
    if (call && !call.ended) leave();
    pendingJoin = false;
    clearStoredAuth();
    if (urlToken) {
      urlToken = null;
      dropUrlToken();
    }
    setAuth(null);
    if (a && a.source === 'login') {
      ui.loginTenant.value = a.tenant || '';
      ui.loginUser.value = a.user || '';
    }
    console.info('kaskade: logged out');
    showLogin('You logged out. Log in to join a room.');
  }

  // ---------------------------------------------------------------------------------------------
  // Join / leave / socket lifecycle
  // ---------------------------------------------------------------------------------------------

  function send(s, msg) {
    if (!s || !s.ws || s.ws.readyState !== WebSocket.OPEN) return false;
    try {
      s.ws.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      console.warn('kaskade: send failed', e);
      return false;
    }
  }

  function join() {
    if (call && !call.ended) return;
    accessToken(); // an expired token is dropped here (and the login form shown)
    applyAccountName();
    const room = ui.room.value.trim();
    const name = ui.name.value.trim();
    if (!room || !name) {
      ui.joinNote.textContent = !room ? 'Enter a room name.' : 'Enter your name.';
      (!room ? ui.room : ui.name).focus();
      return;
    }
    const passphrase = ui.optE2ee.checked ? ui.e2eePassphrase.value : null;
    if (passphrase !== null) {
      const why = !passphrase
        ? 'Enter the room passphrase (everyone in the room uses the same one), or turn end-to-end encryption off.'
        : passphrase.length > E2EE_MAX_PASSPHRASE
          ? `The passphrase is limited to ${E2EE_MAX_PASSPHRASE} characters.`
          : e2eeUnsupported();
      if (why) {
        ui.joinNote.textContent = why;
        if (!passphrase) ui.e2eePassphrase.focus();
        return;
      }
    }
    hideError();
    clearCallUi();
    state = emptyState();
    state.room = room;
    state.name = name;

    const audience = ui.roleAudience.checked;
    const c = (call = newCall(room, name, ui.optMic.checked, ui.optCam.checked, audience ? 'audience' : null));
    c.password = roomPasswords.get(room) || null;
    setState('joining');
    // The audience does not publish: no camera light until a host lets us speak.
    if (!audience) ensureMedia(c);
    if (passphrase === null) {
      setStatus('Connecting\u2026');
      startLink(c, 'join', [wsUrl()]);
      return;
    }
    // The key first: no peer connection exists before every track can be encrypted.
    c.e2ee = { mode: e2eeMode(), key: null };
    setStatus('Deriving the encryption key\u2026');
    deriveE2eeKey(passphrase, room).then(
      (key) => {
        if (call !== c || c.ended) return;
        c.e2ee.key = key;
        setStatus('Connecting\u2026');
        startLink(c, 'join', [wsUrl()]);
      },
      (e) => {
        if (call === c && !c.ended) endCall(`Could not set up end-to-end encryption: ${describe(e)}`);
      },
    );
  }

  /** The `join` message for the call's next attempt (with `resume` once a node gave a token). */
  function joinMessage(c) {
    const m = { type: 'join', room: c.room, name: c.name, auto_subscribe: true };
    // Every join carries the access token, redirects and moves included (a resume join would
    // not need it, but the node may refuse the resume and take us as a new participant).
    const token = accessToken();
    c.tokenSent = token;
    if (token) m.token = token;
    if (c.resumeToken) m.resume = c.resumeToken;
    if (c.site) m.site = c.site;
    if (c.requestedRole) m.role = c.requestedRole;
    // The room's password, when one was typed for it (never logged: this message is not).
    c.passwordSent = !!c.password;
    if (c.password) m.password = c.password;
    return m;
  }

  /** 'drain', 'lost' or 'repair' while the call looks for a node, else null. */
  function movingWhy() {
    return call && !call.ended && call.link && call.link.kind === 'move' ? call.link.why : null;
  }

  /**
   * Starts looking for a node that takes the call: `kind` 'join' (the first join: one URL, retried
   * while the mesh says `unavailable`) or 'move' (after the node went away or asked us to move: the
   * URLs in order, in passes with a growing pause, for up to MOVE_GIVE_UP_MS). Each attempt is a new
   * session; it becomes the current one when its `joined` arrives (promote()).
   */
  function startLink(c, kind, urls, why) {
    cancelLink(c);
    c.link = {
      kind,
      why: why || null,
      urls: uniqueUrls(urls),
      next: 0, // index of the next URL to try (modulo urls.length)
      passes: 0,
      started: performance.now(),
      timer: null,
      attempt: null, // the session being connected
    };
    tryNextNode(c);
  }

  function cancelLink(c) {
    const link = c.link;
    if (!link) return;
    c.link = null;
    if (link.timer) clearTimeout(link.timer);
    if (link.attempt && link.attempt !== sess) closeTransport(link.attempt);
  }

  function tryNextNode(c) {
    const link = c.link;
    if (!link || c.ended || call !== c) return;
    link.timer = null;
    if (link.urls.length === 0) link.urls = [wsUrl()];
    const url = link.urls[link.next % link.urls.length];
    link.next += 1;
    const s = newSession();
    link.attempt = s;
    // The first join has no session to keep going meanwhile: it is the current one at once.
    if (link.kind === 'join') sess = s;
    openSocket(c, s, url);
  }

  /** Opens session `s`'s signalling socket to `url` and sends `join` when it is open. */
  function openSocket(c, s, url) {
    s.url = url;
    clearTimeout(s.joinTimer);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      attemptFailed(c, s, { why: `Could not open the signalling connection: ${describe(e)}` });
      return;
    }
    s.ws = ws;
    s.joinTimer = setTimeout(() => {
      attemptFailed(c, s, { why: `Could not reach the node (no connection within ${CONNECT_TIMEOUT_MS} ms).` });
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      if (s.closed || s.ws !== ws) return;
      clearTimeout(s.joinTimer);
      s.joinTimer = setTimeout(() => {
        attemptFailed(c, s, { why: `The node did not answer the join within ${JOIN_REPLY_TIMEOUT_MS / 1000} s.` });
      }, JOIN_REPLY_TIMEOUT_MS);
      if (c.link && c.link.kind === 'join') setStatus('Joining\u2026');
      send(s, joinMessage(c));
    };
    ws.onmessage = (ev) => {
      if (s.ws === ws) onMessage(s, ev.data);
    };
    ws.onerror = () => {
      /* the close event follows and reports */
    };
    ws.onclose = (ev) => {
      if (s.ws === ws) onSocketClose(s, ev);
    };
  }

  /** The first answer to a `join`: `joined`, `redirect` or a refusal (`error`). */
  function onJoinReply(s, m) {
    const c = call;
    if (!c || c.ended || !c.link || c.link.attempt !== s) return;
    switch (m.type) {
      case 'joined':
        if (!isStr(m.participant) || !m.participant) return;
        clearTimeout(s.joinTimer);
        promote(c, s);
        handled(s, m.type, onJoined(s, m));
        return;
      case 'redirect':
        followRedirect(c, s, m);
        return;
      case 'lobby_waiting':
        waitInLobby(c, s);
        return;
      case 'error':
        onJoinRefused(c, s, m);
        return;
      default:
        console.debug('kaskade: ignoring a message before joined', m.type);
    }
  }

  /** `redirect`: the room is served elsewhere; send the same join there (no error shown). */
  function followRedirect(c, s, m) {
    const url = socketUrl(m.url);
    if (!url) {
      attemptFailed(c, s, { why: 'Could not join: the node sent an invalid redirect.', refused: true });
      return;
    }
    if (s.redirects >= MAX_REDIRECTS) {
      attemptFailed(c, s, { why: `Could not join: more than ${MAX_REDIRECTS} redirects (last to ${url}).`, refused: true });
      return;
    }
    s.redirects += 1;
    console.info(`kaskade: join redirected to ${url}`);
    const old = s.ws;
    s.ws = null; // its close (the node closes it) is no failure
    try {
      old.close(1000, 'redirected');
    } catch (_) {
      /* already closing */
    }
    openSocket(c, s, url);
  }

  function onJoinRefused(c, s, m) {
    const code = isStr(m.code) ? m.code : 'error';
    const message = isStr(m.message) && m.message ? m.message : code;
    console.warn(`kaskade: join refused: ${code}: ${message}`);
    if (code === 'resume_rejected' && c.resumeToken) {
      // The token is no good here (expired, another mesh): come back as a new participant.
      c.resumeToken = '';
      if (send(s, joinMessage(c))) return;
    }
    if (code === 'unauthorized') {
      // Not fatal: log in (the login form comes up) and the page joins again by itself.
      loginToJoin(c, s, message);
      return;
    }
    if (code === 'room_locked') {
      lockedOut(c, s);
      return;
    }
    if (code === 'password_required') {
      // Not fatal: the password form comes up and its submit joins again with the password.
      passwordToJoin(c, s, message);
      return;
    }
    if (code === 'lobby_denied') {
      // Over for good: a host decided; no retry.
      endCall(LOBBY_DENIED_TEXT, 'denied', { banner: false });
      return;
    }
    if (code === 'banned') {
      // Non-fatal on the wire, but final: every later join of this account is refused too.
      endCall(BANNED_TEXT, 'banned', { banner: false });
      return;
    }
    // `unknown_room`: only hosts open rooms; the node says so ("… a host has to open it first").
    const why = code === 'unknown_room' ? sentence(message) : `Could not join: ${message} [${code}]`;
    attemptFailed(c, s, {
      why,
      unavailable: code === 'unavailable',
      refused: true,
    });
  }

  /**
   * A move whose new node refuses us (`why`) while the session on the current node still runs:
   * drops the attempt and keeps that session. False (nothing done) when there is no such session.
   */
  function stayOnCurrentNode(c, s, why) {
    if (!(c.link.kind === 'move' && live(sess) && sess !== s && sess.joined)) return false;
    console.warn(`kaskade: ${why}; staying on the current node`);
    closeTransport(s);
    c.link = null;
    delete document.body.dataset.moving;
    updateStatus();
    updateControls();
    return true;
  }

  /**
   * `room_locked`: a host locked the room and we would be new in it. Not fatal and nothing to
   * retry by itself: back to the join form, whose button tries again. During a move (we came
   * back as a new participant) a session that still runs is kept.
   */
  function lockedOut(c, s) {
    const link = c.link;
    if (!link || link.attempt !== s || s.closed || c.ended) return;
    if (stayOnCurrentNode(c, s, 'the room is locked to newcomers')) return;
    endCall(ROOM_LOCKED_TEXT, 'locked', { banner: false });
    setStatus('Room locked');
  }

  /**
   * `lobby_waiting`: the room has a lobby and a host has to let us in. No timeout while waiting
   * (the node answers `joined` when a host admits us, the fatal `lobby_denied` when one does
   * not); the waiting screen offers to leave. During a move a session that still runs is kept.
   */
  function waitInLobby(c, s) {
    const link = c.link;
    if (!link || link.attempt !== s || s.closed || c.ended) return;
    clearTimeout(s.joinTimer);
    s.joinTimer = null;
    c.lobby = true;
    console.info(`kaskade: waiting in the lobby of ${c.room}`);
    if (link.kind === 'move') {
      setStatus('Waiting for a host to let you back in\u2026');
      return;
    }
    ui.lobbyRoom.textContent = c.room;
    setState('lobby');
    setStatus('Waiting in the lobby');
  }

  /**
   * `password_required`: the room has a password and this join had none or a wrong one. Ends the
   * attempt (camera off, no banner) and shows the password form with the node's reason; its
   * submit joins again with the password (submitRoomPassword()).
   */
  function passwordToJoin(c, s, message) {
    if (c.passwordSent) roomPasswords.delete(c.room); // it was wrong (or changed): do not send it again
    const link = c.link;
    if (!link || link.attempt !== s || s.closed || c.ended) return;
    if (stayOnCurrentNode(c, s, 'the room asks for a password again')) return;
    closeTransport(s);
    cancelLink(c);
    c.ended = true;
    if (sess) teardown(sess);
    stopMedia(c);
    delete document.body.dataset.moving;
    passwordRoom = c.room;
    hideError();
    setState('password');
    setStatus('This room has a password');
    ui.joinNote.textContent = '';
    ui.roomPasswordRoom.textContent = c.room;
    ui.roomPasswordReason.textContent = sentence(message);
    ui.roomPasswordReason.dataset.wrong = /wrong/i.test(message) ? 'true' : 'false';
    ui.roomPassword.value = '';
    ui.roomPassword.focus();
  }

  /** The password form's submit: keeps the password for the room (in memory) and joins again. */
  function submitRoomPassword() {
    const password = ui.roomPassword.value;
    if (!password) {
      ui.roomPasswordReason.textContent = 'Enter the room password.';
      ui.roomPassword.focus();
      return false;
    }
    if (utf8Length(password) > MAX_ROOM_PASSWORD_BYTES) {
      ui.roomPasswordReason.textContent = `Room passwords are at most ${MAX_ROOM_PASSWORD_BYTES} bytes long.`;
      ui.roomPassword.focus();
      return false;
    }
    ui.roomPassword.value = ''; // the field keeps it no longer than the join
    const room = passwordRoom || ui.room.value.trim();
    if (room) {
      roomPasswords.set(room, password);
      ui.room.value = room;
    }
    join();
    return true;
  }

  /** A join attempt failed: retry, try the next node, or give up, depending on the search. */
  function attemptFailed(c, s, f) {
    const link = c.link;
    if (!link || link.attempt !== s || s.closed || c.ended) return;
    closeTransport(s);
    link.attempt = null;
    if (link.kind === 'join') {
      if (f.unavailable) {
        const text = 'The conference service cannot open this room right now \u2014 retrying\u2026';
        setStatus(text);
        ui.joinNote.textContent = text;
        showError(text, false);
        link.retried = true;
        link.next = 0;
        link.timer = setTimeout(() => tryNextNode(c), UNAVAILABLE_RETRY_MS);
        return;
      }
      endCall(f.why);
      return;
    }
    console.warn(`kaskade: moving: ${s.url} failed: ${f.why}`);
    if (performance.now() - link.started >= MOVE_GIVE_UP_MS) {
      if (live(sess) && sess.joined) {
        // Asked to move but nobody took us: stay where we are; its close starts a new search.
        console.warn('kaskade: no node took the call; staying on the current one');
        c.link = null;
        updateStatus();
        return;
      }
      endCall(`Lost the connection to the conference service and could not reconnect within ${MOVE_GIVE_UP_MS / 1000} s.`);
      return;
    }
    if (link.next % link.urls.length === 0) {
      // A full pass failed: pause a little longer each time.
      // Jitter: the clients of a dead node should not all knock at the same moment.
      const base = MOVE_BACKOFF_MS[Math.min(link.passes, MOVE_BACKOFF_MS.length - 1)];
      const delay = Math.round(base * (0.75 + Math.random() * 0.5));
      link.passes += 1;
      link.timer = setTimeout(() => tryNextNode(c), delay);
    } else {
      tryNextNode(c);
    }
  }

  /**
   * Continues the call on another node: the node went away ('lost') or asked us to ('drain', with
   * its `url` to try first). The alternates of the latest `joined` come next, then the page's own
   * node. The current session keeps running meanwhile if it still can (make before break).
   */
  function startMove(c, why, firstUrl) {
    c.reconnects += 1;
    c.reconnectStartedAt = performance.now();
    c.firstFrameAt = null;
    c.awaitingFrame = true;
    document.body.dataset.moving = why;
    const urls = firstUrl ? [firstUrl] : [];
    urls.push(...c.alternates, wsUrl());
    startLink(c, 'move', urls, why);
    console.info(`kaskade: moving (${why}), trying ${c.link ? c.link.urls.join(', ') : '-'}`);
    updateStatus();
    updateControls();
  }

  /**
   * Makes the session whose `joined` just arrived the current one. After a move, the previous
   * session is closed but its local tracks (with their mute state) and its remote tiles are
   * handed over: the tracks are republished, the tiles show their last frame until replaced.
   */
  function promote(c, s) {
    if (c.link && c.link.timer) clearTimeout(c.link.timer);
    if (c.link && c.link.retried) {
      hideError(); // the "retrying" notice is over
      ui.joinNote.textContent = '';
    }
    c.link = null;
    delete document.body.dataset.moving;
    const old = sess;
    sess = s;
    if (old && old !== s) {
      retire(old);
      s.local = carryLocal(old.local);
      s.inherited = true;
      s.tiles = old.tiles;
      old.tiles = new Map();
      const until = performance.now() + STALE_TILE_MS;
      for (const tile of s.tiles.values()) {
        tile.staleUntil = until;
        tile.receiver = null;
      }
    }
    state = emptyState();
    state.room = c.room;
    state.name = c.name;
  }

  /** The local tracks of a session that ended, for the next one (without its transceivers). */
  function carryLocal(local) {
    const out = { mic: null, cam: null, screen: null };
    for (const k of ['mic', 'cam', 'screen']) {
      const l = local[k];
      if (l && l.track && l.track.readyState !== 'ended') {
        out[k] = { track: l.track, transceiver: null, muted: l.muted, stream: l.stream };
      }
    }
    return out;
  }

  function onSocketClose(s, ev) {
    const c = call;
    if (!c || c.ended || s.closed) return;
    const code = ev && ev.code;
    const reason = ev && ev.reason ? `: ${ev.reason}` : '';
    const tooBig = 'The node closed the connection: a message was larger than 64 KiB (1009).';
    if (!s.joined) {
      attemptFailed(c, s, {
        why: code === 1009 ? tooBig : `Could not reach the node (connection closed, code ${code}${reason}).`,
      });
      return;
    }
    if (!live(s)) return;
    if (s.leaving) {
      teardown(s);
      stopMedia(c);
      c.ended = true;
      setState('left');
      setStatus('You left the room.');
      return;
    }
    if (code === 1009) {
      endCall(tooBig);
      return;
    }
    // The node went away (crash, kill, network): continue on another node. The close of a
    // killed node's socket arrives at once (the kernel resets the connection), so start now.
    console.warn(`kaskade: lost the node ${s.url} (code ${code}${reason}); reconnecting`);
    retire(s);
    if (!c.link) startMove(c, 'lost', null);
  }

  /** Ends the session with an error shown to the user. */
  function fail(s, text) {
    if (!live(s)) return;
    endCall(text);
  }

  /**
   * Ends the call for good: closes everything, stops the camera and microphone, shows `text`
   * (in the error banner too unless `opts.banner` is false). `finalState` is the page state
   * afterwards: 'error' (default), 'removed' (a host removed us), 'ended' (a host ended the
   * meeting) or 'locked' (the room takes nobody new).
   */
  function endCall(text, finalState, opts) {
    const c = call;
    if (c) {
      cancelLink(c);
      c.ended = true;
    }
    if (sess) teardown(sess);
    stopMedia(c);
    delete document.body.dataset.moving;
    setState(finalState || 'error');
    setStatus(text);
    ui.joinNote.textContent = text;
    if (!opts || opts.banner !== false) showError(text, true);
    else hideError();
  }

  function leave() {
    const c = call;
    if (!c || c.ended) return;
    const s = sess;
    if (live(s) && s.joined) {
      s.leaving = true;
      send(s, { type: 'leave' });
    }
    cancelLink(c);
    c.ended = true;
    if (s) teardown(s);
    stopMedia(c);
    delete document.body.dataset.moving;
    setState('left');
    setStatus('You left the room.');
  }

  /** Closes the session's socket and peer connections; idempotent. Local media is kept. */
  function closeTransport(s) {
    if (s.closed) return;
    s.closed = true;
    clearTimeout(s.joinTimer);
    if (s.pub.pending) {
      clearTimeout(s.pub.pending.timer);
      s.pub.pending.reject(new Error('session ended'));
      s.pub.pending = null;
    }
    if (s.graceTimer) clearTimeout(s.graceTimer);
    if (s.staleTimer) clearTimeout(s.staleTimer);
    try {
      if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close(1000, 'bye');
    } catch (_) {
      /* already closing */
    }
    for (const pc of [s.publishPc, s.subscribePc]) {
      if (pc) {
        try {
          pc.close();
        } catch (_) {
          /* already closed */
        }
      }
    }
  }

  /** Closes a session that the call moves away from: its tiles stay for the next one. */
  function retire(s) {
    closeTransport(s);
    for (const t of s.tiles.values()) t.el.dataset.stale = 'true';
    for (const a of s.audios.values()) removeAudioEl(a);
    s.audios.clear();
    ui.enableAudio.hidden = true;
  }

  /** Closes everything the session owns, its tiles included; idempotent. */
  function teardown(s) {
    closeTransport(s);
    for (const t of s.tiles.values()) removeTileEl(t);
    s.tiles.clear();
    for (const a of s.audios.values()) removeAudioEl(a);
    s.audios.clear();
    ui.enableAudio.hidden = true;
  }

  /** Stops the call's camera, microphone and screen tracks. */
  function stopMedia(c) {
    const s = sess;
    if (s) {
      for (const l of [s.local.mic, s.local.cam, s.local.screen]) {
        if (l && l.track) l.track.stop();
      }
    }
    if (c && c.media) c.media.then((m) => m.stream.getTracks().forEach((t) => t.stop())).catch(() => {});
    ui.localVideo.srcObject = null;
  }

  /** Starts acquiring the call's camera and microphone unless that is under way or done. */
  function ensureMedia(c) {
    if (!c.media) c.media = acquireMedia(c);
    return c.media;
  }

  /** Stops and forgets the call's camera and microphone (we are in the audience now). */
  function releaseMedia(c) {
    if (c) {
      c.mediaGen += 1;
      const media = c.media;
      c.media = null;
      if (media) media.then((m) => m.stream.getTracks().forEach((t) => t.stop())).catch(() => {});
    }
    ui.localVideo.srcObject = null;
  }

  function clearCallUi() {
    ui.tiles.replaceChildren();
    ui.audioSinks.replaceChildren();
    ui.participants.replaceChildren();
    ui.handQueue.replaceChildren();
    ui.lobbyList.replaceChildren();
    ui.lobbyCount.textContent = '';
    ui.roomPasswordInput.value = '';
    ui.roomPasswordClear.disabled = false;
    if (passwordPending) clearTimeout(passwordPending.timer);
    passwordPending = null;
    showPasswordStatus('', false);
    delete ui.roomPasswordStatus.dataset.protected;
    ui.chatLog.replaceChildren();
    ui.participantCount.textContent = '';
    ui.emptyHint.hidden = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Incoming messages
  // ---------------------------------------------------------------------------------------------

  function onMessage(s, raw) {
    if (s.closed) return;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (e) {
      console.warn('kaskade: ignoring a frame that is not JSON');
      return;
    }
    if (!isObj(msg) || !isStr(msg.type)) {
      console.warn('kaskade: ignoring a frame without a type');
      return;
    }
    if (!s.joined) {
      onJoinReply(s, msg);
      return;
    }
    if (!live(s)) return;
    try {
      handled(s, msg.type, dispatch(s, msg));
    } catch (e) {
      console.error(`kaskade: handling ${msg.type} failed`, e);
    }
  }

  /** Reports the failure of an async message handler. */
  function handled(s, type, r) {
    if (r && typeof r.catch === 'function') {
      r.catch((e) => {
        console.error(`kaskade: handling ${type} failed`, e);
        if (live(s) && !movingWhy()) showError(`Could not handle ${type}: ${describe(e)}`, false);
      });
    }
  }

  function dispatch(s, m) {
    switch (m.type) {
      case 'publish_answer':
        return onPublishAnswer(s, m);
      case 'subscribe_offer':
        return onSubscribeOffer(s, m);
      case 'participant_joined':
        return onParticipantJoined(s, m);
      case 'participant_left':
        return onParticipantLeft(s, m);
      case 'track_published':
        return onTrackPublished(s, m);
      case 'track_unpublished':
        return onTrackUnpublished(s, m);
      case 'track_muted':
        return onTrackMuted(s, m);
      case 'chat':
        return onChat(s, m);
      case 'participant_updated':
        return onParticipantUpdated(s, m);
      case 'audience_count':
        return onAudienceCount(s, m);
      case 'room_settings_changed':
        return onRoomSettingsChanged(s, m);
      case 'muted_by_host':
        return onMutedByHost(s, m);
      case 'publish_closed':
        return onPublishClosed(s, m);
      case 'dominant_speaker':
        return onDominantSpeaker(s, m);
      case 'receive_quality':
        return onReceiveQuality(s, m);
      case 'publish_layers':
        return onPublishLayers(s, m);
      case 'reconnect':
        return onReconnect(s, m);
      case 'lobby_changed':
        return onLobbyChanged(s, m);
      case 'room_password_set':
        return onRoomPasswordSet(s, m);
      case 'error':
        return onError(s, m);
      case 'joined':
      case 'redirect':
      case 'lobby_waiting':
        // Answers to `join`, handled by onJoinReply(); not expected once joined.
        console.debug(`kaskade: ignoring ${m.type} after joined`);
        return undefined;
      default:
        console.debug('kaskade: ignoring unknown message', m.type);
        return undefined;
    }
  }

  /**
   * Rejoins (with the resume token, the same node first) to get fresh peer connections when one
   * is beyond repair (the subscribe connection failed, or the node refused our subscribe answer);
   * at most once per REPAIR_MIN_INTERVAL_MS so a node that keeps refusing does not make us loop.
   * A last resort: a node that works never makes a healthy page do it.
   */
  function repairSession(s, why) {
    const c = call;
    if (!live(s) || !s.joined || !c || c.ended || c.link) return;
    const now = performance.now();
    if (c.repairedAt !== null && now - c.repairedAt < REPAIR_MIN_INTERVAL_MS) {
      console.warn(`kaskade: ${why}; not rejoining again so soon`);
      return;
    }
    c.repairedAt = now;
    console.warn(`kaskade: ${why}; rejoining ${s.url}`);
    startMove(c, 'repair', s.url);
  }

  /** `reconnect`: the node drains for maintenance; move to `url` (then the alternates). */
  function onReconnect(s, m) {
    const c = call;
    const url = socketUrl(m.url);
    const reason = isStr(m.reason) ? m.reason : '';
    console.info(`kaskade: the node asks us to move to ${url} (${reason})`);
    if (!c || c.ended || c.link) return; // already moving
    startMove(c, 'drain', url);
  }

  async function onJoined(s, m) {
    if (s.joined || !isStr(m.participant) || !m.participant) return;
    s.joined = true;
    const c = call;
    if (c.reconnects > 0 && c.participantId && c.participantId !== m.participant) {
      console.warn(`kaskade: rejoined as a new participant ${m.participant} (was ${c.participantId})`);
    }
    if (c.participantId !== m.participant) c.handRaisedAt = null; // a new participant: hand down
    if (c.lobby) console.info('kaskade: a host let us in');
    c.lobby = false;
    c.participantId = m.participant;
    c.iceServers = validIceServers(m.ice_servers);
    // What a later move needs: who we are (token) and where else to go.
    c.resumeToken = isStr(m.resume_token) ? m.resume_token : '';
    c.alternates = Array.isArray(m.alternates) ? uniqueUrls(m.alternates) : [];
    state.participantId = m.participant;
    if (isStr(m.room)) state.room = m.room;
    if (Array.isArray(m.participants)) {
      for (const p of m.participants.map(participantInfo)) {
        if (p) state.participants[p.id] = p;
      }
    }
    state.role = ROLES.includes(m.role) ? m.role : 'speaker';
    state.settings = roomSettings(m.settings);
    state.audience = count(m.audience);
    state.dominantSpeaker = okKey(m.dominant_speaker) ? m.dominant_speaker : null;
    // A rejoin as a new participant (resume refused) should not ask for more than we have.
    c.requestedRole = state.role === 'audience' ? 'audience' : null;
    if (!has(state.participants, state.participantId)) {
      state.participants[state.participantId] = { id: state.participantId, name: state.name };
    }
    Object.assign(state.participants[state.participantId], { role: state.role, handRaisedAt: c.handRaisedAt });
    if (Array.isArray(m.tracks)) {
      for (const t of m.tracks.map(trackInfo)) {
        if (t) state.tracks[t.id] = t;
      }
    }
    ui.roomLabel.textContent = state.room;
    ui.localAvatar.textContent = initial(state.name);
    setState('joined');
    updateStatus();
    renderRoom();
    reconcile(s);
    updateControls();
    startQualityPolling();
    if (mayPublish(state.role)) {
      await startPublishing(s);
    } else {
      // Audience: no camera or microphone (the node would refuse them anyway).
      releaseMedia(c);
      updateControls();
    }
  }

  function onParticipantJoined(s, m) {
    const p = participantInfo(m.participant);
    if (!p) return;
    if (p.id === state.participantId) {
      onOwnUpdate(s, p);
      return;
    }
    state.participants[p.id] = p;
    renderParticipants();
    reconcile(s); // tiles may have been waiting for the name
    updateStatus();
  }

  function onParticipantLeft(s, m) {
    const id = m.participant;
    if (!okKey(id)) return;
    delete state.participants[id];
    for (const t of Object.values(state.tracks)) {
      if (t.participant === id) {
        s.gone.add(t.id);
        delete state.tracks[t.id];
      }
    }
    // Media that arrived without a directory entry but belongs to the participant.
    for (const tile of s.tiles.values()) {
      if (tile.participantId === id) s.gone.add(tile.trackId);
    }
    for (const a of s.audios.values()) {
      if (a.participantId === id) s.gone.add(a.trackId);
    }
    if (state.dominantSpeaker === id) state.dominantSpeaker = null;
    renderParticipants();
    reconcile(s);
    updateStatus();
  }

  function onTrackPublished(s, m) {
    const t = trackInfo(m.track);
    if (!t) return;
    state.tracks[t.id] = t;
    s.gone.delete(t.id);
    renderParticipants();
    reconcile(s);
  }

  function onTrackUnpublished(s, m) {
    if (!okKey(m.track)) return;
    const info = has(state.tracks, m.track) ? state.tracks[m.track] : null;
    delete state.tracks[m.track];
    s.gone.add(m.track);
    // A camera unpublished by someone who stays is most likely them moving to another node
    // (they republish at once): keep the last frame until the new track replaces it.
    // Not when a host moved them to the audience: their video ends for good.
    const tile = s.tiles.get(m.track);
    const owner = info && has(state.participants, info.participant) ? state.participants[info.participant] : null;
    if (tile && info && info.source === 'camera' && owner && owner.role !== 'audience') {
      tile.staleUntil = performance.now() + STALE_TILE_MS;
    }
    renderParticipants();
    reconcile(s);
  }

  function onTrackMuted(s, m) {
    if (!okKey(m.track) || typeof m.muted !== 'boolean') return;
    if (has(state.tracks, m.track)) state.tracks[m.track].muted = m.muted;
    renderParticipants();
    reconcile(s);
  }

  function onError(s, m) {
    const code = isStr(m.code) ? m.code : 'error';
    const message = isStr(m.message) && m.message ? m.message : code;
    const fatal = m.fatal === true;
    console.warn(`kaskade: node error ${code}: ${message}${fatal ? ' (fatal)' : ''}`);
    if (code === 'removed') {
      // A host removed us; the node closes the socket. Not a failure to recover from: no move.
      const c = call;
      if (c) cancelLink(c);
      if (!live(s)) return;
      const said = /^you were removed/i.test(message) ? message.replace(/^y/, 'Y') : `You were removed from the room: ${message}`;
      const text = `${said}. [removed]`;
      endCall(text, 'removed');
      ui.joinNote.textContent = `You were removed from the room ${state.room ? `\u201c${state.room}\u201d` : ''}.`;
      return;
    }
    if (code === 'meeting_ended') {
      // A host ended the meeting for everyone; the node closes the socket. Over for good: no move.
      const c = call;
      if (c) cancelLink(c);
      if (!live(s)) return;
      endCall(MEETING_ENDED_TEXT, 'ended');
      return;
    }
    if (passwordPending && !fatal && PASSWORD_ERROR_CODES.includes(code)) {
      // Most likely the answer to our set_room_password (e.g. a node without access control).
      passwordAnswered(`Could not change the room password: ${sentence(message)}`, true);
    }
    if (code === 'forbidden') {
      if (s.pub.pending && /^publish offer refused/.test(message)) {
        // The node does not let us publish (we are in the audience): drop the publish side.
        stopPublishing(s);
      }
      if (!movingWhy()) showError(`Not allowed: ${message} [${code}]`, false);
      return;
    }
    // The node says which SDP it refused; an older node does not, and then an outstanding
    // publish offer is the likelier culprit.
    const aboutSubscribe = code === 'invalid_sdp' && message.startsWith('subscribe answer');
    if (code === 'invalid_sdp' && s.pub.pending && !aboutSubscribe) {
      const p = s.pub.pending;
      s.pub.pending = null;
      clearTimeout(p.timer);
      p.reject(new Error(`the node refused the publish offer: ${message}`));
    } else if (code === 'invalid_sdp' && !movingWhy()) {
      // The node could not apply our subscribe answer: its offer still waits for an answer, so
      // the subscribe connection is stuck (there is no message to renegotiate it from scratch).
      // The publish connection is not concerned.
      repairSession(s, `the node refused the subscribe answer: ${message}`);
      return;
    }
    if (movingWhy()) {
      // The node we are leaving has its last words (e.g. "resumed in another session" once the
      // new node took us over): not the user's business, the call goes on elsewhere.
      if (fatal) retire(s);
      return;
    }
    if (fatal) {
      fail(s, `${message} [${code}]`);
      return;
    }
    showError(`${message} [${code}]`, false);
  }

  // ---------------------------------------------------------------------------------------------
  // Roles, moderation and the classroom (webinar) mode
  // ---------------------------------------------------------------------------------------------

  /** `participant_updated`: someone's role or raised hand changed (also sent about ourselves). */
  function onParticipantUpdated(s, m) {
    const p = participantInfo(m.participant);
    if (!p) return;
    if (p.id === state.participantId) {
      onOwnUpdate(s, p);
      return;
    }
    state.participants[p.id] = p;
    if (p.role === 'audience') {
      // Moved to the audience: its video ended for good (whether the node told us before or
      // after its `track_unpublished`), so do not keep its last frame.
      for (const tile of s.tiles.values()) {
        if (tile.participantId === p.id) tile.staleUntil = 0;
      }
    }
    renderParticipants();
    reconcile(s); // the stage shows hosts
    updateStatus();
  }

  /** Our own role or hand changed: publish when promoted, stop when moved to the audience. */
  function onOwnUpdate(s, p) {
    const c = call;
    const old = state.role;
    state.role = p.role;
    if (c) {
      c.handRaisedAt = p.handRaisedAt;
      c.requestedRole = p.role === 'audience' ? 'audience' : null;
    }
    const self = has(state.participants, p.id) ? state.participants[p.id] : { id: p.id, name: state.name };
    state.participants[p.id] = Object.assign(self, { role: p.role, handRaisedAt: p.handRaisedAt });
    if (old !== p.role) {
      console.info(`kaskade: our role is now ${p.role} (was ${old})`);
      if (p.role === 'audience') {
        // The node closes our publish connection too (`publish_closed`); stop at once anyway.
        if (s.pubStarted || s.publishPc) stopPublishing(s);
        showNotice('A host moved you to the audience: your camera and microphone are off. Raise your hand to speak again.');
      } else if (old === 'audience') {
        showNotice(
          p.role === 'host'
            ? 'You are a host now. Your camera and microphone are on.'
            : 'A host invited you to speak: your camera and microphone are on.',
        );
        startPublishing(s).catch((e) => showError(`Publishing failed: ${describe(e)}`, false));
      } else if (p.role === 'host') {
        showNotice('You are a host now: you can manage the room in the side panel.');
      } else if (old === 'host') {
        showNotice('You are no longer a host.');
      }
    }
    renderRoom();
    reconcile(s);
    updateControls();
    updateStatus();
  }

  function onAudienceCount(s, m) {
    state.audience = count(m.count);
    renderRoom();
  }

  function onRoomSettingsChanged(s, m) {
    const was = state.settings;
    state.settings = roomSettings(m.settings);
    const now = state.settings;
    if (was.only_hosts_publish !== now.only_hosts_publish && state.role !== 'host') {
      showNotice(
        now.only_hosts_publish ? 'Classroom mode is on: only hosts (and whom they invite) speak.' : 'Classroom mode is off.',
      );
    } else if (was.locked !== now.locked) {
      showNotice(now.locked ? 'The room is locked: nobody new can join.' : 'The room is unlocked: others can join again.');
    } else if (was.lobby !== now.lobby) {
      showNotice(
        now.lobby ? 'The lobby is on: newcomers wait until a host lets them in.' : 'The lobby is off: newcomers come straight in.',
      );
    }
    renderRoom();
    reconcile(s);
  }

  /** A host muted one of our tracks: the node stops forwarding it until we unmute ourselves. */
  function onMutedByHost(s, m) {
    if (!okKey(m.track)) return;
    const what = [];
    for (const [k, label] of [['mic', 'microphone'], ['cam', 'camera'], ['screen', 'screen share']]) {
      const l = s.local[k];
      if (l && ownTrackId(l) === m.track) {
        l.muted = true;
        l.track.enabled = false;
        s.mutedSent[m.track] = true; // the node knows: our unmute must be sent
        what.push(label);
      }
    }
    if (has(state.tracks, m.track)) state.tracks[m.track].muted = true;
    const by = okKey(m.by) ? participantName(m.by) : 'A host';
    showNotice(`${by} muted your ${what.join(' and ') || 'track'}. Unmute yourself when you want to speak.`);
    updateControls();
    renderParticipants();
  }

  /** The node closed our publish connection (we are in the audience now). */
  function onPublishClosed(s, m) {
    const reason = isStr(m.reason) && m.reason ? m.reason : 'you are in the audience now';
    console.info(`kaskade: publish connection closed by the node: ${reason}`);
    stopPublishing(s);
  }

  function onDominantSpeaker(s, m) {
    state.dominantSpeaker = okKey(m.participant) ? m.participant : null;
    for (const li of ui.participants.children) {
      li.dataset.speaking = li.dataset.participantId === state.dominantSpeaker ? 'true' : 'false';
    }
    for (const tile of s.tiles.values()) refreshTile(tile);
    refreshLocalSpeaking();
  }

  function onReceiveQuality(s, m) {
    const layers = {};
    if (isObj(m.layers)) {
      for (const k of Object.keys(m.layers)) {
        const v = m.layers[k];
        if (okKey(k) && typeof v === 'number' && Number.isInteger(v) && v >= 0) layers[k] = v;
      }
    }
    const estimate = typeof m.estimate_bps === 'number' && Number.isFinite(m.estimate_bps) ? m.estimate_bps : 0;
    state.receiveQuality = { estimate_bps: estimate, layers, at: Date.now() };
    renderRoom();
    for (const tile of s.tiles.values()) renderTileQuality(tile);
  }

  function refreshLocalSpeaking() {
    const me = state.participantId;
    ui.localPreview.classList.toggle('speaking', !!me && state.dominantSpeaker === me);
  }

  /** "1.2 Mbit/s" / "350 kbit/s". */
  function bitrate(bps) {
    if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
    return `${Math.round(bps / 1e3)} kbit/s`;
  }

  /** Everything that depends on our role, the room's settings and the audience count. */
  function renderRoom() {
    const role = state.role;
    const joined = lastState === 'joined';
    const classroom = state.settings.only_hosts_publish;
    document.body.dataset.role = role || '';
    ui.callView.dataset.classroom = classroom ? 'true' : 'false';
    ui.roleLabel.hidden = !joined || !role;
    ui.roleLabel.textContent = role ? ROLE_LABELS[role] : '';
    ui.roleLabel.dataset.role = role || '';
    ui.lockedLabel.hidden = !joined || !state.settings.locked;
    ui.lobbyLabel.hidden = !joined || !state.settings.lobby;
    const n = state.audience;
    ui.audienceCount.hidden = !joined || (!classroom && n === 0);
    ui.audienceCount.textContent = `\u{1F465} ${n} in the audience`;
    ui.audienceCount.dataset.count = String(n);
    const q = state.receiveQuality;
    ui.receiveEstimate.hidden = !joined || !q || !q.estimate_bps;
    if (q && q.estimate_bps) {
      ui.receiveEstimate.textContent = `\u2193 ${bitrate(q.estimate_bps)}`;
      ui.receiveEstimate.title = `The node's estimate of the bandwidth it can send you: ${bitrate(q.estimate_bps)}`;
      ui.receiveEstimate.dataset.bps = String(q.estimate_bps);
    }
    const host = role === 'host';
    ui.hostPanel.hidden = !joined || !host;
    ui.onlyHostsPublish.checked = classroom;
    const locked = state.settings.locked;
    ui.lockRoom.textContent = locked ? 'Unlock room' : 'Lock room';
    ui.lockRoom.setAttribute('aria-pressed', locked ? 'true' : 'false');
    ui.lockRoom.title = locked ? 'Let new participants join again' : 'Let nobody new join (who is in stays)';
    ui.lobbyToggle.checked = state.settings.lobby;
    // Only hosts hear about the lobby; a former host's list is stale.
    if (!host) state.lobby = [];
    renderLobby();
    ui.classroomHint.hidden = !(joined && role === 'audience');
    ui.classroomHint.textContent =
      call && call.handRaisedAt !== null
        ? 'Your hand is raised: a host will let you speak.'
        : 'You are in the audience. Raise your hand to ask to speak.';
    renderParticipants();
    refreshLocalSpeaking();
  }

  /** Hosts: audience members with a raised hand, longest waiting first. */
  function renderHandQueue() {
    const hands = Object.values(state.participants)
      .filter((p) => p.id !== state.participantId && p.role === 'audience' && p.handRaisedAt !== null)
      .sort((a, b) => a.handRaisedAt - b.handRaisedAt);
    const previous = new Map();
    for (const li of ui.handQueue.children) previous.set(li.dataset.handId, li);
    const items = hands.map((p) => {
      const sig = JSON.stringify([p.name, p.handRaisedAt]);
      const old = previous.get(p.id);
      if (old && old.dataset.sig === sig) return old;
      const li = document.createElement('li');
      li.dataset.handId = p.id;
      li.dataset.sig = sig;
      const name = document.createElement('span');
      name.className = 'participant-name';
      name.textContent = `\u270B ${p.name || 'Guest'}`;
      const since = document.createElement('time');
      since.className = 'hand-time';
      const d = new Date(p.handRaisedAt);
      since.dateTime = d.toISOString();
      since.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
      const speak = actionButton('Let speak', 'speaker', p.id, 'primary');
      speak.classList.add('let-speak');
      li.append(name, since, speak);
      return li;
    });
    replaceList(ui.handQueue, items);
    ui.handCount.textContent = hands.length ? String(hands.length) : '';
    ui.handEmpty.hidden = hands.length > 0;
  }

  function actionButton(label, action, participant, kind) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = `btn tiny${kind ? ` ${kind}` : ''}`;
    b.textContent = label;
    b.dataset.action = action;
    b.dataset.participant = participant;
    return b;
  }

  /** The moderation buttons a host sees next to another participant. */
  function moderationButtons(p) {
    const out = [];
    if (p.role === 'audience') out.push(actionButton('Make speaker', 'speaker', p.id, 'primary'));
    if (p.role === 'speaker') out.push(actionButton('Move to audience', 'audience', p.id));
    if (p.role === 'host') out.push(actionButton('Make speaker', 'speaker', p.id));
    if (p.role !== 'host') out.push(actionButton('Make host', 'host', p.id));
    if (p.role !== 'audience') out.push(actionButton('Mute', 'mute', p.id));
    out.push(actionButton('Remove', 'remove', p.id, 'danger'));
    const ban = actionButton('Remove and ban', 'ban', p.id, 'danger');
    ban.dataset.ban = p.id;
    ban.title = 'Remove and keep out of this room for good (their account or invite)';
    out.push(ban);
    return out;
  }

  /** A click on a moderation button (participant list or hand queue). */
  function onModerationClick(ev) {
    const b = ev.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const s = sess;
    const id = b.dataset.participant;
    if (!live(s) || !s.joined || !okKey(id)) return;
    if (state.role !== 'host') {
      showError('Only hosts can do this.', false);
      return;
    }
    const action = b.dataset.action;
    let msg = null;
    if (ROLES.includes(action)) msg = { type: 'set_role', participant: id, role: action };
    else if (action === 'mute') msg = { type: 'mute_participant', participant: id, kind: 'audio' };
    else if (action === 'remove') msg = { type: 'remove_participant', participant: id };
    else if (action === 'admit') msg = { type: 'admit_participant', participant: id };
    else if (action === 'deny') msg = { type: 'deny_participant', participant: id };
    else if (action === 'ban') {
      const who = participantName(id);
      if (!window.confirm(`Remove ${who} and ban them from this room? They cannot join it again.`)) return;
      msg = { type: 'remove_participant', participant: id, ban: true };
    }
    if (msg && send(s, msg)) {
      // The node's update re-renders the entry; if it refused (see the banner), allow a retry.
      b.disabled = true;
      setTimeout(() => {
        b.disabled = false;
      }, 3000);
    }
  }

  function toggleHand() {
    const s = sess;
    const c = call;
    if (!live(s) || !s.joined || !c) return;
    const raised = c.handRaisedAt === null;
    if (!send(s, { type: 'raise_hand', raised })) return;
    // Shown at once; the node's `participant_updated` about us confirms it.
    c.handRaisedAt = raised ? Date.now() : null;
    if (has(state.participants, state.participantId)) state.participants[state.participantId].handRaisedAt = c.handRaisedAt;
    renderRoom();
    updateControls();
  }

  /**
   * Sends the room's settings with `change` applied. Always all of them: the node replaces the
   * settings, so one toggle must not reset the other. The node answers everyone (us included)
   * with `room_settings_changed`.
   */
  function sendSettings(change) {
    const s = sess;
    if (!live(s) || !s.joined) return false;
    const settings = {
      only_hosts_publish: state.settings.only_hosts_publish,
      locked: state.settings.locked,
      lobby: state.settings.lobby,
      ...change,
    };
    return send(s, { type: 'set_room_settings', settings });
  }

  function setOnlyHostsPublish() {
    if (!sendSettings({ only_hosts_publish: ui.onlyHostsPublish.checked })) {
      ui.onlyHostsPublish.checked = state.settings.only_hosts_publish;
    }
  }

  function toggleRoomLock() {
    sendSettings({ locked: !state.settings.locked });
  }

  /** The lobby switch: newcomers who may not host wait until a host lets them in. */
  function setLobby() {
    if (!sendSettings({ lobby: ui.lobbyToggle.checked })) ui.lobbyToggle.checked = state.settings.lobby;
  }

  /** `lobby_changed` (hosts): the whole waiting list, on every node. */
  function onLobbyChanged(s, m) {
    const before = new Set(state.lobby.map((w) => w.participant));
    state.lobby = lobbyList(m.waiting);
    const fresh = state.lobby.filter((w) => !before.has(w.participant));
    if (fresh.length && state.role === 'host') {
      const names = fresh.map((w) => w.name || 'Guest').join(', ');
      showNotice(`${names} ${fresh.length === 1 ? 'is' : 'are'} waiting in the lobby.`);
    }
    renderLobby();
  }

  /** Hosts: who waits in the lobby, with Admit and Deny. Unchanged entries are kept as they are. */
  function renderLobby() {
    const previous = new Map();
    for (const li of ui.lobbyList.children) previous.set(li.dataset.lobbyId, li);
    const items = state.lobby.map((w) => {
      const sig = w.name;
      const old = previous.get(w.participant);
      if (old && old.dataset.sig === sig) return old;
      const li = document.createElement('li');
      li.dataset.lobbyId = w.participant;
      li.dataset.sig = sig;
      const avatar = document.createElement('span');
      avatar.className = 'avatar small';
      avatar.textContent = initial(w.name);
      const name = document.createElement('span');
      name.className = 'participant-name';
      name.textContent = w.name || 'Guest';
      const admit = actionButton('Admit', 'admit', w.participant, 'primary');
      admit.dataset.admit = w.participant;
      const deny = actionButton('Deny', 'deny', w.participant);
      deny.dataset.deny = w.participant;
      li.append(avatar, name, admit, deny);
      return li;
    });
    replaceList(ui.lobbyList, items);
    const n = state.lobby.length;
    ui.lobbyCount.textContent = n ? String(n) : '';
    ui.lobbyCount.dataset.count = String(n);
    ui.lobbyEmpty.hidden = n > 0;
    ui.lobbyEmpty.textContent = state.settings.lobby ? 'Nobody is waiting.' : 'The lobby is off: newcomers come straight in.';
  }

  /** Hosts: sets (a string) or clears (null) the room password; the node answers `room_password_set`. */
  function sendRoomPassword(password) {
    const s = sess;
    if (!live(s) || !s.joined) return;
    if (password !== null) {
      if (!password) {
        showPasswordStatus('Enter a password first.', true);
        ui.roomPasswordInput.focus();
        return;
      }
      if (utf8Length(password) > MAX_ROOM_PASSWORD_BYTES) {
        showPasswordStatus(`Room passwords are at most ${MAX_ROOM_PASSWORD_BYTES} bytes long.`, true);
        return;
      }
    }
    if (!send(s, { type: 'set_room_password', password })) return;
    ui.roomPasswordInput.value = ''; // the page keeps no copy
    if (passwordPending) clearTimeout(passwordPending.timer);
    passwordPending = {
      timer: setTimeout(() => {
        passwordPending = null;
      }, PASSWORD_REPLY_MS),
    };
    showPasswordStatus(password === null ? 'Clearing the password\u2026' : 'Setting the password\u2026', false);
  }

  function showPasswordStatus(text, error) {
    ui.roomPasswordStatus.textContent = text;
    ui.roomPasswordStatus.dataset.error = error ? 'true' : 'false';
  }

  /** The answer to set_room_password (or the error the node sent instead). */
  function passwordAnswered(text, error) {
    if (passwordPending) clearTimeout(passwordPending.timer);
    passwordPending = null;
    showPasswordStatus(text, error);
  }

  /** `room_password_set` (to the host who asked): whether the room has a password now. */
  function onRoomPasswordSet(s, m) {
    if (typeof m.protected !== 'boolean') return;
    state.roomProtected = m.protected;
    passwordAnswered(
      m.protected ? 'Password set: participants who may not host need it to join.' : 'Password cleared: no password needed.',
      false,
    );
    ui.roomPasswordStatus.dataset.protected = m.protected ? 'true' : 'false';
    ui.roomPasswordClear.disabled = !m.protected;
  }

  /** Hosts: ends the meeting for everyone (after a confirmation); the node answers `meeting_ended`. */
  function endMeeting() {
    const s = sess;
    if (!live(s) || !s.joined) return;
    if (!window.confirm('End the meeting for everyone? Everybody, you included, will be disconnected.')) return;
    send(s, { type: 'end_meeting' });
  }

  function muteAll() {
    const s = sess;
    if (!live(s) || !s.joined) return;
    send(s, { type: 'mute_participant', kind: 'audio' });
    showNotice('Everyone but the hosts was muted. They can unmute themselves.');
  }

  let noticeTimer = null;

  /** An informational message (not an error) shown for a few seconds. */
  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = false;
    if (noticeTimer) clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      ui.notice.hidden = true;
      noticeTimer = null;
    }, NOTICE_HIDE_MS);
  }

  function hideNotice() {
    if (noticeTimer) clearTimeout(noticeTimer);
    noticeTimer = null;
    if (ui.notice) ui.notice.hidden = true;
  }

  // ---------------------------------------------------------------------------------------------
  // Received quality per tile (resolution from getStats, layer from `receive_quality`)
  // ---------------------------------------------------------------------------------------------

  let qualityTimer = null;

  function startQualityPolling() {
    if (qualityTimer) return;
    qualityTimer = setInterval(() => {
      const s = sess;
      renderE2ee();
      if (!live(s) || !s.joined) return;
      pollQuality(s).catch(() => {});
    }, QUALITY_POLL_MS);
  }

  async function pollQuality(s) {
    for (const tile of Array.from(s.tiles.values())) {
      const row = { packetsReceived: 0, framesDecoded: 0, frameWidth: 0, frameHeight: 0 };
      try {
        if (tile.receiver) sumInbound(await tile.receiver.getStats(), 'video', row);
      } catch (_) {
        /* receiver gone */
      }
      if (!row.frameWidth && tile.video.videoWidth) {
        row.frameWidth = tile.video.videoWidth;
        row.frameHeight = tile.video.videoHeight;
      }
      tile.size = row.frameWidth ? { width: row.frameWidth, height: row.frameHeight } : null;
      renderTileQuality(tile);
    }
  }

  /** The simulcast layer the node forwards for a track, as {index, rid}, or null. */
  function forwardedLayer(trackId) {
    const q = state.receiveQuality;
    if (!q || !has(q.layers, trackId)) return null;
    const index = q.layers[trackId];
    const info = has(state.tracks, trackId) ? state.tracks[trackId] : null;
    const rid = info && info.layers[index] ? info.layers[index] : null;
    return { index, rid };
  }

  function renderTileQuality(tile) {
    const parts = [];
    if (tile.size) parts.push(`${tile.size.width}\u00d7${tile.size.height}`);
    const layer = forwardedLayer(tile.trackId);
    if (layer) parts.push(`layer ${layer.rid || layer.index}`);
    tile.quality.textContent = parts.join(' \u00b7 ');
    tile.quality.hidden = parts.length === 0;
    tile.el.dataset.resolution = tile.size ? `${tile.size.width}x${tile.size.height}` : '';
    tile.el.dataset.layer = layer ? String(layer.index) : '';
  }

  // ---------------------------------------------------------------------------------------------
  // End-to-end encryption (encoded transforms)
  // ---------------------------------------------------------------------------------------------
  //
  // With a room passphrase every encoded frame is encrypted in the browser before the packetizer
  // and decrypted after the depacketizer: the node forwards media it cannot read. The packetizer's
  // payload descriptor stays clear by construction; the transform also leaves the first bytes of
  // each frame clear, the codec header the node (keyframe detection) and the receiving browser's
  // depacketizer read. The key comes from the passphrase (PBKDF2, salted with the room name); the
  // passphrase never goes to the node (`#e2ee=` in a link keeps it out of HTTP requests too).
  // E2EE off: no transform, no different peer connection configuration, no codec preference.

  const E2EE_PBKDF2_ITERATIONS = 600000; // OWASP's figure for PBKDF2-HMAC-SHA256
  const E2EE_SALT_PREFIX = 'kaskade-e2ee/v1/room/';
  const E2EE_KEY_ID = 1; // carried in every frame: a frame under another key fails at once
  const E2EE_MAX_PASSPHRASE = 1024;
  const E2EE_WARN_MS = 3000; // the indicator warns this long after a frame failed to decrypt

  /** Frames passed through the transforms since the page loaded (window.kaskade.e2ee). */
  const e2eeCounts = { encryptedFrames: 0, decryptedFrames: 0, decryptFailures: 0, encryptFailures: 0 };
  let e2eeWorker = null; // the transform worker (RTCRtpScriptTransform), made once per page
  let e2eeCipher = null; // the main-thread cipher (createEncodedStreams fallback)
  const e2eeAttached = new WeakSet(); // senders and receivers that have their transform
  let e2eeCountTimer = null; // refreshes the indicator from the main-thread cipher's counts
  let e2eeLastFailures = 0;
  let e2eeFailedAt = 0;

  /**
   * The frame cipher. Self-contained: its source is also the transform worker's code (a Blob URL,
   * the node serves no other script), so it uses nothing from around it. `counts` is updated.
   *
   * A frame on the wire: clear prefix | AES-GCM ciphertext and 16-byte tag | IV (12) | prefix
   * length (1) | key id (1). The IV is random per frame; the clear prefix, its length and the key
   * id are authenticated (additional data). The clear prefix: VP8 keyframes 10 bytes (3-byte frame
   * tag with the P bit the node's keyframe detection reads, start code, width and height that the
   * receiver's depacketizer reads), VP8 delta frames 3 (the frame tag), Opus 1 (the TOC byte). A
   * frame that cannot be encrypted is dropped, never sent in clear; one that cannot be decrypted
   * (other passphrase, no E2EE at the sender, tampered) is dropped before the decoder.
   */
  function e2eeFrameCipher(counts) {
    const IV_BYTES = 12;
    const TAG_BYTES = 16;
    const TRAILER_BYTES = IV_BYTES + 2;
    const CLEAR_BYTES = { key: 10, delta: 3, audio: 1 };

    function clearBytes(frame, kind) {
      if (kind === 'audio') return CLEAR_BYTES.audio;
      return frame.type === 'key' ? CLEAR_BYTES.key : CLEAR_BYTES.delta;
    }

    /** Additional data: the clear prefix, its length, the key id. */
    function additional(data, clear, keyId) {
      const ad = new Uint8Array(clear + 2);
      ad.set(data.subarray(0, clear), 0);
      ad[clear] = clear;
      ad[clear + 1] = keyId;
      return ad;
    }

    async function encrypt(frame, kind, key, keyId) {
      const data = new Uint8Array(frame.data);
      const clear = Math.min(clearBytes(frame, kind), data.length);
      const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
      const sealed = new Uint8Array(
        await crypto.subtle.encrypt(
          { name: 'AES-GCM', iv, additionalData: additional(data, clear, keyId), tagLength: TAG_BYTES * 8 },
          key,
          data.subarray(clear),
        ),
      );
      const out = new Uint8Array(clear + sealed.length + TRAILER_BYTES);
      out.set(data.subarray(0, clear), 0);
      out.set(sealed, clear);
      out.set(iv, clear + sealed.length);
      out[out.length - 2] = clear;
      out[out.length - 1] = keyId;
      frame.data = out.buffer;
    }

    async function decrypt(frame, key, keyId) {
      const data = new Uint8Array(frame.data);
      const n = data.length;
      if (n < TAG_BYTES + TRAILER_BYTES) throw new Error('too short to be encrypted');
      if (data[n - 1] !== keyId) throw new Error(`unknown key id ${data[n - 1]}`);
      const clear = data[n - 2];
      const end = n - TRAILER_BYTES;
      if (clear + TAG_BYTES > end) throw new Error('bad clear prefix length');
      const iv = data.slice(end, end + IV_BYTES);
      const plain = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv, additionalData: additional(data, clear, keyId), tagLength: TAG_BYTES * 8 },
          key,
          data.subarray(clear, end),
        ),
      );
      const out = new Uint8Array(clear + plain.length);
      out.set(data.subarray(0, clear), 0);
      out.set(plain, clear);
      frame.data = out.buffer;
    }

    /** A TransformStream of encoded frames: `operation` 'encrypt' | 'decrypt'. */
    function transformer(operation, kind, key, keyId) {
      return new TransformStream({
        async transform(frame, controller) {
          if (frame.data.byteLength === 0) {
            controller.enqueue(frame); // nothing to hide (an empty frame)
            return;
          }
          if (operation === 'encrypt') {
            try {
              await encrypt(frame, kind, key, keyId);
            } catch (_) {
              counts.encryptFailures += 1;
              return; // dropped: never sent in clear
            }
            counts.encryptedFrames += 1;
          } else {
            try {
              await decrypt(frame, key, keyId);
            } catch (_) {
              counts.decryptFailures += 1;
              return; // dropped: the decoder only sees what we could decrypt
            }
            counts.decryptedFrames += 1;
          }
          controller.enqueue(frame);
        },
      });
    }

    return { transformer };
  }

  /** The transform worker's code: one cipher for every transform, counts posted to the page. */
  function e2eeWorkerMain(makeCipher) {
    const counts = { encryptedFrames: 0, decryptedFrames: 0, decryptFailures: 0, encryptFailures: 0 };
    const cipher = makeCipher(counts);
    let sent = '';
    self.onrtctransform = (ev) => {
      const t = ev.transformer;
      const o = t.options || {};
      t.readable
        .pipeThrough(cipher.transformer(o.operation, o.kind, o.key, o.keyId))
        .pipeTo(t.writable)
        .catch(() => {}); // the sender or receiver went away
    };
    setInterval(() => {
      const now = JSON.stringify(counts);
      if (now !== sent) {
        sent = now;
        self.postMessage({ type: 'counts', counts });
      }
    }, 200);
  }

  /** How this browser transforms encoded frames: 'script-transform', 'encoded-streams' or null. */
  function e2eeMode() {
    if (typeof window.RTCRtpScriptTransform === 'function' && typeof window.Worker === 'function') return 'script-transform';
    const S = window.RTCRtpSender;
    const R = window.RTCRtpReceiver;
    if (S && R && typeof S.prototype.createEncodedStreams === 'function' && typeof R.prototype.createEncodedStreams === 'function') {
      return 'encoded-streams';
    }
    return null;
  }

  /** Why E2EE cannot work in this page, or null. */
  function e2eeUnsupported() {
    if (!window.isSecureContext || !window.crypto || !window.crypto.subtle) {
      return 'End-to-end encryption needs a secure origin (https, or localhost).';
    }
    if (!e2eeMode()) return 'This browser cannot encrypt media end to end (no encoded transforms).';
    return null;
  }

  /** The AES-GCM key of a room passphrase: PBKDF2-SHA-256, salted with the room name. */
  async function deriveE2eeKey(passphrase, room) {
    const enc = new TextEncoder();
    const base = await crypto.subtle.importKey('raw', enc.encode(passphrase), 'PBKDF2', false, ['deriveKey']);
    return crypto.subtle.deriveKey(
      { name: 'PBKDF2', salt: enc.encode(E2EE_SALT_PREFIX + room), iterations: E2EE_PBKDF2_ITERATIONS, hash: 'SHA-256' },
      base,
      { name: 'AES-GCM', length: 256 },
      false,
      ['encrypt', 'decrypt'],
    );
  }

  function e2eeWorkerInstance() {
    if (!e2eeWorker) {
      const src = `'use strict';\n(${e2eeWorkerMain.toString()})(${e2eeFrameCipher.toString()});\n`;
      const url = URL.createObjectURL(new Blob([src], { type: 'text/javascript' }));
      e2eeWorker = new Worker(url, { name: 'kaskade-e2ee' });
      URL.revokeObjectURL(url);
      e2eeWorker.onmessage = (ev) => {
        const d = ev.data;
        if (isObj(d) && d.type === 'counts' && isObj(d.counts)) {
          for (const k of Object.keys(e2eeCounts)) e2eeCounts[k] = count(d.counts[k]);
          renderE2ee();
        }
      };
      e2eeWorker.onerror = (ev) => console.error('kaskade: the E2EE worker failed', ev.message || ev);
    }
    return e2eeWorker;
  }

  /** The STUN/TURN servers of a `joined` message that look like RTCIceServer entries. */
  function validIceServers(list) {
    if (!Array.isArray(list)) return [];
    return list
      .filter((x) => isObj(x) && Array.isArray(x.urls) && x.urls.every(isStr))
      .map((x) => ({
        urls: x.urls,
        ...(isStr(x.username) ? { username: x.username } : {}),
        ...(isStr(x.credential) ? { credential: x.credential } : {}),
      }));
  }

  /**
   * The peer connection configuration: the node's STUN/TURN servers (with `?relay=1`, only
   * through TURN, to check a TURN set-up) and the encoded-streams fallback of E2EE.
   */
  function pcConfig() {
    const config = { iceServers: (call && call.iceServers) || [] };
    if (relayOnly) config.iceTransportPolicy = 'relay';
    const e = call && call.e2ee;
    if (e && e.mode === 'encoded-streams') config.encodedInsertableStreams = true;
    return config;
  }

  /** Puts the call's frame transform on a sender ('encrypt') or receiver ('decrypt'), once. */
  function attachE2ee(endpoint, operation, kind) {
    const e = call && call.e2ee;
    if (!e || !endpoint || e2eeAttached.has(endpoint)) return;
    if (!e.key) throw new Error('no encryption key yet');
    e2eeAttached.add(endpoint);
    const k = kind === 'audio' ? 'audio' : 'video';
    if (e.mode === 'script-transform') {
      endpoint.transform = new RTCRtpScriptTransform(e2eeWorkerInstance(), {
        operation,
        kind: k,
        key: e.key,
        keyId: E2EE_KEY_ID,
      });
      return;
    }
    if (!e2eeCipher) e2eeCipher = e2eeFrameCipher(e2eeCounts);
    const { readable, writable } = endpoint.createEncodedStreams();
    readable
      .pipeThrough(e2eeCipher.transformer(operation, k, e.key, E2EE_KEY_ID))
      .pipeTo(writable)
      .catch(() => {}); // the sender or receiver went away
    if (!e2eeCountTimer) e2eeCountTimer = setInterval(renderE2ee, 500);
  }

  /**
   * With E2EE, a new publish transceiver gets the encrypting transform before it is negotiated
   * (so no frame leaves in clear), and video prefers VP8: its packetizer takes the encrypted
   * frame as it is, where H.264's and AV1's parse the bitstream. If the transform cannot be put
   * on, the track is taken off the sender rather than sent in clear.
   */
  function protectSender(tr, kind) {
    const e = call && call.e2ee;
    if (!e) return;
    if (kind === 'video' && typeof tr.setCodecPreferences === 'function' && window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities) {
      try {
        const caps = RTCRtpReceiver.getCapabilities('video');
        const codecs = (caps && caps.codecs) || [];
        const vp8 = codecs.filter((c) => /^video\/vp8$/i.test(c.mimeType));
        const helpers = codecs.filter((c) => /^video\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType));
        if (vp8.length) tr.setCodecPreferences(vp8.concat(helpers));
      } catch (err) {
        console.warn('kaskade: E2EE: could not prefer VP8', err);
      }
    }
    try {
      attachE2ee(tr.sender, 'encrypt', kind);
    } catch (err) {
      console.error('kaskade: E2EE: could not encrypt a track; not sending it', err);
      tr.sender.replaceTrack(null).catch(() => {});
      showError(`End-to-end encryption failed for your ${kind}: it is not sent (${describe(err)}).`, false);
    }
  }

  /** With E2EE, a receiver gets the decrypting transform (from ontrack, before its frames). */
  function protectReceiver(receiver) {
    if (!(call && call.e2ee) || !receiver || !receiver.track) return;
    try {
      attachE2ee(receiver, 'decrypt', receiver.track.kind);
    } catch (err) {
      console.error('kaskade: E2EE: could not decrypt a received track', err);
    }
  }

  /** The "E2EE on" indicator in the top bar; warns while frames fail to decrypt. */
  function renderE2ee() {
    if (!ui.e2eeLabel) return;
    const on = !!(call && !call.ended && call.e2ee) && lastState === 'joined';
    ui.e2eeLabel.hidden = !on;
    document.body.dataset.e2ee = on ? 'on' : 'off';
    if (!on) return;
    const now = performance.now();
    if (e2eeCounts.decryptFailures > e2eeLastFailures) e2eeFailedAt = now;
    e2eeLastFailures = e2eeCounts.decryptFailures;
    const warn = e2eeFailedAt > 0 && now - e2eeFailedAt < E2EE_WARN_MS;
    ui.e2eeLabel.dataset.warn = warn ? 'true' : 'false';
    ui.e2eeText.textContent = warn ? 'E2EE on \u00b7 cannot decrypt some media' : 'E2EE on';
    ui.e2eeLabel.title = warn
      ? 'Media from someone cannot be decrypted: they use another passphrase, or none.'
      : `End-to-end encrypted: the server forwards media it cannot read. ${e2eeCounts.encryptedFrames} frames encrypted, ${e2eeCounts.decryptedFrames} decrypted.`;
  }

  /** The join form's E2EE part: the passphrase field shows while the box is ticked. */
  function syncE2eeForm() {
    ui.e2eeField.hidden = !ui.optE2ee.checked;
  }

  // ---------------------------------------------------------------------------------------------
  // Local media and the publish connection
  // ---------------------------------------------------------------------------------------------

  /** getUserMedia for what the user asked for; never rejects (falls back to less, reports why). */
  async function acquireMedia(c) {
    const result = { stream: new MediaStream(), mic: null, cam: null };
    const gen = c.mediaGen;
    if (!c.wantMic && !c.wantCam) return result;
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) {
      showError('This browser cannot access the camera or microphone (a secure origin is needed).', false);
      return result;
    }
    const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    const attempts = [];
    if (c.wantMic && c.wantCam) attempts.push({ audio, video }, { audio }, { video });
    else if (c.wantMic) attempts.push({ audio });
    else attempts.push({ video });
    let lastErr = null;
    for (const constraints of attempts) {
      try {
        const stream = await md.getUserMedia(constraints);
        result.stream = stream;
        result.mic = stream.getAudioTracks()[0] || null;
        result.cam = stream.getVideoTracks()[0] || null;
        break;
      } catch (e) {
        lastErr = e;
      }
    }
    if (c.ended || call !== c || c.mediaGen !== gen) {
      // The call ended, or the node made us audience while the browser was asking.
      result.stream.getTracks().forEach((t) => t.stop());
      return result;
    }
    const missing = [];
    if (c.wantMic && !result.mic) missing.push('microphone');
    if (c.wantCam && !result.cam) missing.push('camera');
    if (missing.length) {
      showError(`Could not use your ${missing.join(' and ')}${lastErr ? ` (${describe(lastErr)})` : ''}.`, false);
    }
    if (result.cam) {
      ui.localVideo.srcObject = new MediaStream([result.cam]);
      ui.localVideo.play().catch(() => {});
    }
    return result;
  }

  function createPublishPc(s) {
    const pc = new RTCPeerConnection(pcConfig());
    s.publishPc = pc;
    pc.onicecandidate = (ev) => sendCandidate(s, 'publish', ev.candidate);
    pc.onconnectionstatechange = () => {
      if (live(s)) updateStatus();
    };
    pc.oniceconnectionstatechange = () => {
      if (!live(s)) return;
      updateStatus();
      if (pc.iceConnectionState === 'failed' && s.publishPc === pc) negotiatePublish(s, true);
    };
    return pc;
  }

  function sendCandidate(s, role, c) {
    if (!c || !c.candidate || !live(s)) return; // null / empty = end of candidates
    send(s, {
      type: 'candidate',
      role,
      candidate: {
        candidate: c.candidate,
        sdpMid: c.sdpMid === undefined ? null : c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex === undefined ? null : c.sdpMLineIndex,
      },
    });
  }

  /**
   * Creates the publish connection and publishes the call's microphone and camera (acquiring
   * them first if needed: after a promotion out of the audience). Once per session until the
   * node closes our publish connection (stopPublishing()). `force` skips the role check (the
   * `kaskade.publish()` test hook: the node must refuse an audience member itself).
   */
  async function startPublishing(s, force) {
    const c = call;
    if (!live(s) || !c || s.pubStarted) return;
    s.pubStarted = true;
    const gen = c.mediaGen;
    const pending = s.inherited && c.media === null ? null : ensureMedia(c);
    const media = pending ? await pending : { stream: new MediaStream(), mic: null, cam: null };
    if (!live(s) || !s.pubStarted || s.publishPc) return;
    if (c.mediaGen !== gen || (!force && !mayPublish(state.role))) {
      // Moved to the audience while the camera was starting.
      s.pubStarted = false;
      releaseMedia(c);
      updateControls();
      return;
    }
    if (!s.inherited) {
      s.local.mic = media.mic ? { track: media.mic, transceiver: null, muted: false } : null;
      s.local.cam = media.cam ? { track: media.cam, transceiver: null, muted: false } : null;
    }
    if (s.local.cam && !ui.localVideo.srcObject) {
      ui.localVideo.srcObject = new MediaStream([s.local.cam.track]);
      ui.localVideo.play().catch(() => {});
    }
    // After a move the same tracks (and mute states) are published again on the new node.
    const pc = createPublishPc(s);
    const { mic, cam, screen } = s.local;
    if (mic) {
      const tr = pc.addTransceiver(mic.track, { direction: 'sendonly', streams: [media.stream] });
      protectSender(tr, 'audio');
      s.sources.set(tr, 'microphone');
      mic.transceiver = tr;
    }
    if (cam) {
      let tr;
      try {
        tr = pc.addTransceiver(cam.track, {
          direction: 'sendonly',
          streams: [media.stream],
          sendEncodings: CAMERA_ENCODINGS.map((e) => Object.assign({}, e)),
        });
      } catch (e) {
        console.warn('kaskade: simulcast not available, sending one layer', e);
        tr = pc.addTransceiver(cam.track, { direction: 'sendonly', streams: [media.stream] });
      }
      protectSender(tr, 'video');
      s.sources.set(tr, 'camera');
      cam.transceiver = tr;
    }
    if (screen) addScreenTransceiver(s, screen);
    updateControls();
    updateStatus();
    renderParticipants();
    if (pc.getTransceivers().length > 0) await negotiatePublish(s);
  }

  /**
   * Ends publishing: the node made us audience (`publish_closed`, or our role changed) or refused
   * our offer as `forbidden`. Closes the publish connection, stops camera, microphone and screen;
   * a later promotion publishes again on a new connection. Idempotent.
   */
  function stopPublishing(s) {
    s.pubStarted = false;
    s.pub.again = false;
    s.pub.restart = false;
    if (s.pub.pending) {
      const p = s.pub.pending;
      s.pub.pending = null;
      clearTimeout(p.timer);
      const e = new Error('publishing stopped');
      e.quiet = true;
      p.reject(e);
    }
    const pc = s.publishPc;
    s.publishPc = null;
    if (pc) {
      try {
        pc.close();
      } catch (_) {
        /* already closed */
      }
    }
    for (const k of ['mic', 'cam', 'screen']) {
      const l = s.local[k];
      if (l && l.track) l.track.stop();
      s.local[k] = null;
    }
    s.inherited = false;
    s.sources = new Map();
    s.mutedSent = {};
    for (const id of Object.values(state.published)) delete state.tracks[id];
    state.published = {};
    state.publishedSources = {};
    releaseMedia(call);
    updateControls();
    updateStatus();
    renderParticipants();
  }

  /** Publishes a screen track on the session's publish connection (no simulcast). */
  function addScreenTransceiver(s, l) {
    const tr = s.publishPc.addTransceiver(l.track, { direction: 'sendonly', streams: [l.stream] });
    protectSender(tr, 'video');
    s.sources.set(tr, 'screen');
    l.transceiver = tr;
    l.track.addEventListener('ended', () => {
      if (live(s) && s.local.screen && s.local.screen.track === l.track) stopScreenShare(s);
    });
  }

  /**
   * Sends a publish_offer for the publish connection's current transceivers and applies the
   * answer. Calls while a negotiation is under way are coalesced into one more round afterwards,
   * so at most one publish offer is outstanding.
   */
  async function negotiatePublish(s, iceRestart) {
    if (iceRestart) s.pub.restart = true;
    if (s.pub.busy) {
      s.pub.again = true;
      return;
    }
    s.pub.busy = true;
    try {
      do {
        s.pub.again = false;
        try {
          await publishOnce(s);
        } catch (e) {
          // Not when publishing was stopped on purpose (we are in the audience now).
          if (live(s) && s.publishPc && !(e && e.quiet)) {
            console.error('kaskade: publishing failed', e);
            showError(`Publishing failed: ${describe(e)}`, false);
          }
        }
      } while (s.pub.again && live(s));
    } finally {
      s.pub.busy = false;
    }
  }

  async function publishOnce(s) {
    const pc = s.publishPc;
    if (!live(s) || !pc || pc.signalingState === 'closed') return;
    if (pc.getTransceivers().length === 0) return;
    // stopPublishing() may close the connection while we wait.
    const current = () => live(s) && s.publishPc === pc;
    const iceRestart = s.pub.restart;
    s.pub.restart = false;
    const offer = await pc.createOffer(iceRestart ? { iceRestart: true } : undefined);
    if (!current()) return;
    await pc.setLocalDescription(offer);
    if (!current()) return;

    const sources = {};
    for (const t of pc.getTransceivers()) {
      const src = s.sources.get(t);
      if (!t.mid || !src || t.stopped || !t.sender.track) continue;
      if (t.direction === 'sendonly' || t.direction === 'sendrecv') sources[t.mid] = src;
    }
    state.publishedSources = sources;

    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (s.pub.pending && s.pub.pending.timer === timer) s.pub.pending = null;
        reject(new Error('no publish_answer from the node'));
      }, ANSWER_TIMEOUT_MS);
      s.pub.pending = { resolve, reject, timer };
    });
    if (!send(s, { type: 'publish_offer', sdp: pc.localDescription.sdp, sources })) {
      clearTimeout(s.pub.pending.timer);
      s.pub.pending = null;
      return;
    }
    let msg;
    try {
      msg = await answer;
    } catch (e) {
      if (pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      }
      throw e;
    }
    if (!current()) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    state.published = midMap(msg.tracks);
    for (const [mid, id] of Object.entries(state.published)) {
      const src = sources[mid];
      if (src && !has(state.tracks, id)) {
        state.tracks[id] = {
          id,
          participant: state.participantId,
          kind: src === 'microphone' || src === 'screen_audio' ? 'audio' : 'video',
          source: src,
          layers: [],
          muted: false,
        };
      }
    }
    syncMuted(s, s.local.mic);
    syncMuted(s, s.local.cam);
    updateStatus();
  }

  /**
   * Dynacast: the node says which simulcast layers of one of our tracks anyone can receive
   * (lowest first, the order of CAMERA_ENCODINGS); the others stop being encoded and sent.
   */
  async function onPublishLayers(s, m) {
    if (!okKey(m.track) || !Array.isArray(m.active) || !s.publishPc) return;
    const mid = Object.keys(state.published).find((k) => state.published[k] === m.track);
    const tr = mid && s.publishPc.getTransceivers().find((t) => t.mid === mid);
    if (!tr || !tr.sender) return;
    const params = tr.sender.getParameters();
    const encodings = params.encodings || [];
    if (encodings.length < 2) return;
    let changed = false;
    encodings.forEach((e, i) => {
      const active = i === 0 || m.active[i] !== false;
      if (e.active !== active) {
        e.active = active;
        changed = true;
      }
    });
    if (!changed) return;
    state.layersSent = encodings.map((e) => e.active);
    await tr.sender.setParameters(params);
  }

  function onPublishAnswer(s, m) {
    if (!isStr(m.sdp)) return;
    const p = s.pub.pending;
    if (!p) {
      console.warn('kaskade: ignoring a publish_answer nobody waits for');
      return;
    }
    s.pub.pending = null;
    clearTimeout(p.timer);
    p.resolve(m);
  }

  /** The node's id of one of our own local tracks, once a publish_answer named it. */
  function ownTrackId(l) {
    if (!l || !l.transceiver || !l.transceiver.mid) return null;
    const id = state.published[l.transceiver.mid];
    return okKey(id) ? id : null;
  }

  /** Tells the room our track's muted state if the node does not know it yet. */
  function syncMuted(s, l) {
    const id = ownTrackId(l);
    if (!id || !live(s)) return;
    if ((s.mutedSent[id] === true) === l.muted) return;
    if (send(s, { type: 'set_muted', track: id, muted: l.muted })) s.mutedSent[id] = l.muted;
    if (has(state.tracks, id)) state.tracks[id].muted = l.muted;
  }

  /** True while there is a call whose local media the user may control (also while moving). */
  function inCall(s) {
    return !!(s && call && !call.ended && s.joined);
  }

  function toggleMic() {
    const s = sess;
    if (!inCall(s) || !s.local.mic) return;
    const l = s.local.mic;
    l.muted = !l.muted;
    l.track.enabled = !l.muted;
    syncMuted(s, l);
    updateControls();
    renderParticipants();
  }

  function toggleCam() {
    const s = sess;
    if (!inCall(s) || !s.local.cam) return;
    const l = s.local.cam;
    l.muted = !l.muted;
    l.track.enabled = !l.muted;
    syncMuted(s, l);
    updateControls();
  }

  async function toggleScreen() {
    const s = sess;
    if (!live(s) || !s.publishPc) return;
    if (s.local.screen) {
      stopScreenShare(s);
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      showError('This browser cannot share the screen.', false);
      return;
    }
    ui.shareScreen.disabled = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    } catch (e) {
      if (live(s)) {
        if (!e || e.name !== 'NotAllowedError') showError(`Could not share the screen: ${describe(e)}`, false);
        updateControls();
      }
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (!live(s) || !track || s.local.screen) {
      stream.getTracks().forEach((t) => t.stop());
      if (live(s)) updateControls();
      return;
    }
    try {
      track.contentHint = 'detail';
    } catch (_) {
      /* optional */
    }
    s.local.screen = { track, transceiver: null, muted: false, stream };
    addScreenTransceiver(s, s.local.screen);
    updateControls();
    negotiatePublish(s);
  }

  function stopScreenShare(s) {
    const l = s.local.screen;
    if (!l) return;
    s.local.screen = null;
    try {
      s.publishPc.removeTrack(l.transceiver.sender);
    } catch (_) {
      /* pc closed */
    }
    try {
      l.transceiver.direction = 'inactive';
    } catch (_) {
      /* transceiver stopped */
    }
    l.track.stop();
    updateControls();
    negotiatePublish(s);
  }

  function updateControls() {
    const s = sess;
    const mic = s && s.local.mic;
    const cam = s && s.local.cam;
    const screen = s && s.local.screen;

    ui.muteMic.disabled = !mic;
    setToggle(ui.muteMic, !mic || mic.muted, mic && !mic.muted ? 'Mute' : mic ? 'Unmute' : 'No microphone');
    ui.toggleCam.disabled = !cam;
    setToggle(ui.toggleCam, !cam || cam.muted, cam && !cam.muted ? 'Stop video' : cam ? 'Start video' : 'No camera');
    const canShare = !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
    ui.shareScreen.disabled = !live(s) || !s.publishPc || !canShare;
    ui.shareScreen.setAttribute('aria-pressed', screen ? 'true' : 'false');
    ui.shareScreen.classList.toggle('active', !!screen);
    ui.shareScreen.querySelector('.label').textContent = screen ? 'Stop sharing' : 'Share screen';

    ui.localPreview.dataset.camera = cam && !cam.muted ? 'on' : 'off';
    ui.localMicOff.hidden = !(mic && mic.muted);

    // The audience has no publish controls, only a hand to raise; they come back on promotion.
    const audience = state.role === 'audience';
    ui.muteMic.hidden = audience;
    ui.toggleCam.hidden = audience;
    ui.shareScreen.hidden = audience;
    ui.localPreview.hidden = audience;
    ui.raiseHand.hidden = !audience;
    const raised = !!(call && call.handRaisedAt !== null);
    ui.raiseHand.disabled = !live(s) || !s.joined;
    ui.raiseHand.setAttribute('aria-pressed', raised ? 'true' : 'false');
    ui.raiseHand.classList.toggle('active', raised);
    ui.raiseHand.querySelector('.label').textContent = raised ? 'Lower hand' : 'Raise hand';
  }

  /** Marks a mute-style button as "off" (red) and sets its label. */
  function setToggle(btn, off, label) {
    btn.setAttribute('aria-pressed', off ? 'true' : 'false');
    btn.classList.toggle('off', off);
    btn.querySelector('.label').textContent = label;
  }

  // ---------------------------------------------------------------------------------------------
  // The subscribe connection
  // ---------------------------------------------------------------------------------------------

  function onSubscribeOffer(s, m) {
    if (!isStr(m.sdp)) return;
    // Offers are applied strictly in order, one at a time.
    s.subQueue = s.subQueue
      .then(() => applySubscribeOffer(s, m))
      .catch((e) => {
        if (!live(s)) return;
        console.error('kaskade: subscribe offer failed', e);
        showError(`Could not receive media: ${describe(e)}`, false);
      });
  }

  async function applySubscribeOffer(s, m) {
    if (!live(s)) return;
    const pc = s.subscribePc || createSubscribePc(s);
    // Set the map first: ontrack fires inside setRemoteDescription.
    state.subscribeTracks = midMap(m.tracks);
    await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
    if (!live(s)) return;
    const answer = await pc.createAnswer();
    if (!live(s)) return;
    await pc.setLocalDescription(answer);
    if (!live(s)) return;
    send(s, { type: 'subscribe_answer', sdp: pc.localDescription.sdp });
    reconcile(s);
  }

  function createSubscribePc(s) {
    const pc = new RTCPeerConnection(pcConfig());
    s.subscribePc = pc;
    pc.onicecandidate = (ev) => sendCandidate(s, 'subscribe', ev.candidate);
    pc.ontrack = (ev) => {
      protectReceiver(ev.receiver); // E2EE: before its first frame reaches the decoder
      if (!live(s)) return;
      // The track starts "muted" until media flows; refresh the tile when that changes.
      ev.track.onunmute = () => {
        if (live(s)) reconcile(s);
      };
      reconcile(s);
    };
    pc.onconnectionstatechange = () => {
      if (!live(s)) return;
      updateStatus();
      // Only the node can restart the subscribe connection's ICE (it offers): rejoin instead.
      if (pc.connectionState === 'failed') repairSession(s, 'the subscribe connection failed');
    };
    pc.oniceconnectionstatechange = () => {
      if (live(s)) updateStatus();
    };
    return pc;
  }

  /**
   * Brings tiles and audio elements in line with the subscribe connection's receivers, the latest
   * `subscribe_offer` map (mid -> track id) and the track directory. Idempotent; called whenever
   * any of those changes, so `subscribe_offer` and `track_published` may arrive in either order.
   */
  function reconcile(s) {
    if (!live(s)) return;
    const pc = s.subscribePc;
    const wantTiles = new Map();
    const wantAudio = new Map();
    let waiting = false;
    const now = performance.now();

    if (pc) {
      for (const t of pc.getTransceivers()) {
        if (!t.mid || t.stopped) continue;
        const dir = t.currentDirection;
        if (dir === 'inactive' || dir === 'sendonly' || dir === 'stopped') continue;
        const trackId = state.subscribeTracks[t.mid];
        if (!okKey(trackId) || !has(state.subscribeTracks, t.mid) || s.gone.has(trackId)) continue;
        const track = t.receiver && t.receiver.track;
        if (!track) continue;
        protectReceiver(t.receiver); // E2EE: normally done in ontrack already
        const info = has(state.tracks, trackId) ? state.tracks[trackId] : null;
        if (info && info.participant === state.participantId) continue; // never play ourselves
        const kind = info ? info.kind : track.kind;
        const entry = { trackId, receiver: t.receiver, track, info, mid: t.mid };
        if (kind === 'audio') {
          wantAudio.set(trackId, entry);
        } else if (info) {
          s.firstSeen.delete(trackId);
          wantTiles.set(trackId, entry);
        } else {
          // Media before track_published: give the directory a moment to catch up.
          if (!s.firstSeen.has(trackId)) s.firstSeen.set(trackId, now);
          if (now - s.firstSeen.get(trackId) >= UNKNOWN_TRACK_GRACE_MS) wantTiles.set(trackId, entry);
          else waiting = true;
        }
      }
    }

    let staleNext = Infinity;
    for (const [id, tile] of s.tiles) {
      if (wantTiles.has(id)) continue;
      if (keepStale(tile, wantTiles, now)) {
        staleNext = Math.min(staleNext, tile.staleUntil);
        continue;
      }
      removeTileEl(tile);
      s.tiles.delete(id);
    }
    for (const entry of wantTiles.values()) updateTile(s, entry);

    for (const [id, a] of s.audios) {
      if (!wantAudio.has(id)) {
        removeAudioEl(a);
        s.audios.delete(id);
      }
    }
    for (const entry of wantAudio.values()) updateAudio(s, entry);
    if (s.audios.size === 0) ui.enableAudio.hidden = true;

    // Indicators depend on other tracks (the owner's microphone), so refresh all tiles.
    for (const tile of s.tiles.values()) refreshTile(tile);
    ui.emptyHint.hidden = s.tiles.size > 0;

    if (waiting && !s.graceTimer) {
      s.graceTimer = setTimeout(() => {
        s.graceTimer = null;
        reconcile(s);
      }, UNKNOWN_TRACK_GRACE_MS + 50);
    }
    if (staleNext < Infinity && !s.staleTimer) {
      s.staleTimer = setTimeout(() => {
        s.staleTimer = null;
        reconcile(s);
      }, staleNext - now + 20);
    }
  }

  /**
   * Whether a tile whose media is gone (its participant moved to another node, or we did) keeps
   * showing its last frame: for a short while, while its participant is still in the room, and
   * until a live tile of the same participant and source replaces it.
   */
  function keepStale(tile, wantTiles, now) {
    if (!tile.staleUntil || now >= tile.staleUntil) return false;
    if (tile.participantId && !has(state.participants, tile.participantId)) return false;
    for (const e of wantTiles.values()) {
      if (e.info && e.info.participant === tile.participantId && tileSource(e.info) === tile.source) return false;
    }
    return true;
  }

  function tileSource(info) {
    return info && info.source === 'screen' ? 'screen' : 'camera';
  }

  function participantName(id) {
    if (has(state.participants, id) && state.participants[id].name) return state.participants[id].name;
    return id ? 'Guest' : 'Unknown';
  }

  /** True if the participant publishes a microphone and it is muted. */
  function micMuted(participantId) {
    let found = false;
    for (const t of Object.values(state.tracks)) {
      if (t.participant === participantId && t.source === 'microphone') {
        if (!t.muted) return false;
        found = true;
      }
    }
    return found;
  }

  function updateTile(s, entry) {
    let tile = s.tiles.get(entry.trackId);
    if (!tile) {
      tile = createTile(s, entry);
      s.tiles.set(entry.trackId, tile);
      ui.tiles.appendChild(tile.el);
    }
    if (tile.track !== entry.track) {
      tile.track = entry.track;
      tile.generation = ++mediaGenerations;
      tile.video.srcObject = new MediaStream([entry.track]);
      tile.video.play().catch(() => {});
      watchFirstFrame(tile.video);
    }
    tile.staleUntil = 0;
    tile.receiver = entry.receiver;
    tile.info = entry.info;
    tile.participantId = entry.info ? entry.info.participant : '';
    tile.source = tileSource(entry.info);
  }

  /** Records when the first remote video frame after a move is shown (kaskade.firstFrameAfterReconnectAt). */
  function watchFirstFrame(video) {
    const c = call;
    if (!c || !c.awaitingFrame || c.link) return;
    const seen = () => {
      if (call !== c || !c.awaitingFrame) return;
      c.awaitingFrame = false;
      c.firstFrameAt = performance.now();
      console.info(`kaskade: first remote frame ${Math.round(c.firstFrameAt - c.reconnectStartedAt)} ms after the move started`);
    };
    if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(seen);
    video.addEventListener('loadeddata', seen, { once: true });
  }

  function createTile(s, entry) {
    const el = document.createElement('div');
    el.className = 'tile';
    el.dataset.trackId = entry.trackId;

    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // audio plays through the <audio> sinks
    video.setAttribute('muted', '');
    video.setAttribute('playsinline', '');

    const placeholder = document.createElement('div');
    placeholder.className = 'tile-placeholder';
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    placeholder.appendChild(avatar);

    const footer = document.createElement('div');
    footer.className = 'tile-footer';
    const name = document.createElement('span');
    name.className = 'tile-name';
    const mic = document.createElement('span');
    mic.className = 'tile-muted';
    mic.title = 'Microphone muted';
    mic.appendChild(svgIcon(MIC_OFF_PATHS));
    mic.hidden = true;
    footer.append(mic, name);

    const layer = document.createElement('select');
    layer.className = 'tile-layer';
    layer.title = 'Received quality';
    layer.setAttribute('aria-label', 'Received quality');
    for (const [value, label] of [['', 'Auto'], ['low', 'Low'], ['medium', 'Medium'], ['high', 'High']]) {
      const o = document.createElement('option');
      o.value = value;
      o.textContent = label;
      if (!value) o.disabled = true;
      layer.appendChild(o);
    }
    layer.value = '';
    layer.hidden = true;
    layer.addEventListener('change', () => {
      if (LAYERS.includes(layer.value)) setLayer(entry.trackId, layer.value);
    });
    layer.addEventListener('click', (ev) => ev.stopPropagation());

    // Received resolution (getStats) and forwarded simulcast layer (`receive_quality`).
    const quality = document.createElement('span');
    quality.className = 'tile-quality';
    quality.title = 'Received resolution and layer';
    quality.hidden = true;

    el.append(video, placeholder, footer, quality, layer);
    el.addEventListener('click', () => el.classList.toggle('focused'));
    return {
      el,
      video,
      placeholder,
      avatar,
      name,
      mic,
      layer,
      quality,
      size: null, // {width, height} last decoded, from pollQuality()
      trackId: entry.trackId,
      track: null,
      receiver: null,
      staleUntil: 0, // while > now: media gone, last frame kept (see keepStale)
      generation: 0, // which received track the tile shows (stats restart with a new one)
    };
  }

  /** Updates a tile's attributes, label and indicators from the directories. */
  function refreshTile(tile) {
    const info = has(state.tracks, tile.trackId) ? state.tracks[tile.trackId] : tile.info;
    const pid = info ? info.participant : '';
    const source = tileSource(info);
    tile.participantId = pid;
    tile.source = source;
    tile.el.dataset.participantId = pid;
    tile.el.dataset.source = source;
    tile.el.dataset.stale = tile.staleUntil ? 'true' : 'false';
    const who = participantName(pid);
    tile.name.textContent = source === 'screen' ? `${who} \u00b7 screen` : who;
    tile.avatar.textContent = initial(who);
    tile.video.classList.toggle('contain', source === 'screen');
    const videoOff = !!(info && info.muted);
    tile.el.dataset.videoMuted = videoOff ? 'true' : 'false';
    tile.placeholder.hidden = !videoOff;
    const audioOff = source === 'camera' && !!pid && micMuted(pid);
    tile.el.dataset.audioMuted = audioOff ? 'true' : 'false';
    tile.mic.hidden = !audioOff;
    tile.layer.hidden = !(info && info.layers && info.layers.length > 1);
    // Classroom: hosts' cameras and screen shares go on the stage, the others form a strip.
    const owner = pid && has(state.participants, pid) ? state.participants[pid] : null;
    const role = owner && owner.role ? owner.role : '';
    tile.el.dataset.role = role;
    tile.el.dataset.stage = state.settings.only_hosts_publish && (source === 'screen' || role === 'host') ? 'true' : 'false';
    const speaking = !!pid && pid === state.dominantSpeaker && source === 'camera';
    tile.el.dataset.speaking = speaking ? 'true' : 'false';
    tile.el.classList.toggle('speaking', speaking);
    renderTileQuality(tile);
  }

  function removeTileEl(tile) {
    tile.video.srcObject = null;
    tile.el.remove();
  }

  function updateAudio(s, entry) {
    let a = s.audios.get(entry.trackId);
    if (!a) {
      const el = document.createElement('audio');
      el.autoplay = true;
      el.dataset.trackId = entry.trackId;
      a = { el, trackId: entry.trackId, track: null, receiver: null, participantId: '' };
      s.audios.set(entry.trackId, a);
      ui.audioSinks.appendChild(el);
    }
    a.receiver = entry.receiver;
    a.participantId = entry.info ? entry.info.participant : '';
    a.el.dataset.participantId = a.participantId;
    if (a.track !== entry.track) {
      a.track = entry.track;
      a.el.srcObject = new MediaStream([entry.track]);
      playAudio(a.el);
    }
  }

  function playAudio(el) {
    const p = el.play();
    if (p && typeof p.catch === 'function') {
      p.catch((e) => {
        if (e && e.name === 'NotAllowedError') ui.enableAudio.hidden = false;
      });
    }
  }

  function enableAudio() {
    ui.enableAudio.hidden = true;
    for (const el of ui.audioSinks.querySelectorAll('audio')) playAudio(el);
  }

  function removeAudioEl(a) {
    a.el.srcObject = null;
    a.el.remove();
  }

  function setLayer(trackId, layer) {
    const s = sess;
    if (!live(s) || !okKey(trackId) || !LAYERS.includes(layer)) return false;
    return send(s, { type: 'set_layer', track: trackId, layer });
  }

  // ---------------------------------------------------------------------------------------------
  // Participants and chat
  // ---------------------------------------------------------------------------------------------

  /**
   * The participant list. An entry whose content did not change is kept as it is (not rebuilt),
   * so a host's click on its buttons is not lost to a re-render (the dominant speaker changes
   * several times a second; that only flips `data-speaking`).
   */
  function renderParticipants() {
    const s = sess;
    const ids = Object.keys(state.participants);
    const self = state.participantId;
    const rank = (id) => (id === self ? -1 : ROLES.indexOf(state.participants[id].role || 'speaker'));
    ids.sort((a, b) => rank(a) - rank(b));
    const moderator = state.role === 'host';
    const previous = new Map();
    for (const li of ui.participants.children) previous.set(li.dataset.participantId, li);
    const items = [];
    for (const id of ids) {
      const p = state.participants[id];
      const sharing = Object.values(state.tracks).some((t) => t.participant === id && t.source === 'screen');
      const muted = id === self ? !!(s && s.local.mic && s.local.mic.muted) : micMuted(id);
      const hand = p.handRaisedAt !== null && p.handRaisedAt !== undefined;
      const sig = JSON.stringify([p.name, p.role, hand, sharing, muted, moderator, id === self]);
      const speaking = id === state.dominantSpeaker ? 'true' : 'false';
      const old = previous.get(id);
      if (old && old.dataset.sig === sig) {
        old.dataset.speaking = speaking;
        items.push(old);
        continue;
      }
      const li = document.createElement('li');
      li.dataset.participantId = id;
      li.dataset.sig = sig;
      li.dataset.role = p.role || 'speaker';
      li.dataset.speaking = speaking;
      const avatar = document.createElement('span');
      avatar.className = 'avatar small';
      avatar.textContent = initial(p.name);
      const name = document.createElement('span');
      name.className = 'participant-name';
      name.textContent = p.name || 'Guest';
      li.append(avatar, name);
      if (id === self) {
        const you = document.createElement('span');
        you.className = 'tag';
        you.textContent = 'you';
        li.appendChild(you);
      }
      if (p.role === 'host' || p.role === 'audience') {
        const tag = document.createElement('span');
        tag.className = `tag role-${p.role}`;
        tag.textContent = p.role;
        li.appendChild(tag);
      }
      if (hand) {
        const h = document.createElement('span');
        h.className = 'hand';
        h.title = 'Hand raised';
        h.textContent = '\u270B';
        li.appendChild(h);
        li.dataset.hand = 'true';
      }
      if (sharing) {
        const tag = document.createElement('span');
        tag.className = 'tag accent';
        tag.textContent = 'sharing';
        li.appendChild(tag);
      }
      if (muted) {
        const m = document.createElement('span');
        m.className = 'participant-muted';
        m.title = 'Microphone muted';
        m.appendChild(svgIcon(MIC_OFF_PATHS));
        li.appendChild(m);
        li.dataset.muted = 'true';
      }
      if (moderator && id !== self) {
        const actions = document.createElement('div');
        actions.className = 'participant-actions';
        actions.append(...moderationButtons(p));
        li.appendChild(actions);
      }
      items.push(li);
    }
    replaceList(ui.participants, items);
    ui.participantCount.textContent = ids.length ? String(ids.length) : '';
    renderHandQueue();
  }

  /** Sets a list's children unless they are already exactly `items` (no needless DOM moves). */
  function replaceList(list, items) {
    const now = list.children;
    if (now.length === items.length && items.every((el, i) => now[i] === el)) return;
    list.replaceChildren(...items);
  }

  function appendChat(fromId, name, text, ts) {
    const row = document.createElement('div');
    row.className = 'chat-message';
    if (fromId && fromId === state.participantId) row.classList.add('own');
    row.dataset.from = fromId || '';
    const head = document.createElement('div');
    head.className = 'chat-head';
    const n = document.createElement('span');
    n.className = 'chat-name';
    n.textContent = name || 'Guest';
    const time = document.createElement('time');
    time.className = 'chat-time';
    const d = new Date(typeof ts === 'number' && Number.isFinite(ts) ? ts : Date.now());
    time.dateTime = d.toISOString();
    time.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    head.append(n, time);
    const body = document.createElement('div');
    body.className = 'chat-text';
    body.textContent = text;
    row.append(head, body);
    const atBottom = ui.chatLog.scrollHeight - ui.chatLog.scrollTop - ui.chatLog.clientHeight < 40;
    ui.chatLog.appendChild(row);
    if (atBottom || row.classList.contains('own')) ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
    return row;
  }

  function onChat(s, m) {
    if (!isStr(m.text)) return;
    const from = isStr(m.from) ? m.from : '';
    const name = isStr(m.name) && m.name ? m.name : participantName(from);
    if (from && from === state.participantId) {
      // Our own message coming back: it is already shown.
      const i = s.pendingChat.findIndex((p) => p.text === m.text);
      if (i >= 0) {
        const [p] = s.pendingChat.splice(i, 1);
        p.row.classList.remove('pending');
        return;
      }
    }
    appendChat(from, name, m.text, m.ts);
  }

  function sendChat() {
    const s = sess;
    if (!live(s) || !s.joined) return;
    const text = ui.chatInput.value;
    if (!text.trim()) return;
    if (Array.from(text).length > MAX_CHAT_LEN) {
      showError(`Chat messages are limited to ${MAX_CHAT_LEN} characters.`, false);
      return;
    }
    if (!send(s, { type: 'chat', text })) return;
    const row = appendChat(state.participantId, state.name, text, Date.now());
    row.classList.add('pending');
    s.pendingChat.push({ text, row });
    if (s.pendingChat.length > 50) s.pendingChat.shift();
    ui.chatInput.value = '';
    ui.chatInput.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Test hooks
  // ---------------------------------------------------------------------------------------------

  function sumInbound(report, kind, into) {
    let latest = -1;
    report.forEach((st) => {
      if (st.type !== 'inbound-rtp' || (st.kind || st.mediaType) !== kind) return;
      into.packetsReceived += st.packetsReceived || 0;
      if (kind === 'video') {
        into.framesDecoded += st.framesDecoded || 0;
        const ts = st.lastPacketReceivedTimestamp || st.timestamp || 0;
        if (st.frameWidth && ts >= latest) {
          latest = ts;
          into.frameWidth = st.frameWidth;
          into.frameHeight = st.frameHeight || 0;
        }
      } else {
        into.totalSamplesReceived += st.totalSamplesReceived || 0;
      }
    });
  }

  /** Per-tile video and summed audio receive statistics (for end-to-end tests). */
  async function stats() {
    const out = { tiles: [], audio: { packetsReceived: 0, totalSamplesReceived: 0, tracks: 0 } };
    const s = sess;
    if (!s || s.closed) return out;
    for (const tile of Array.from(s.tiles.values())) {
      const row = {
        participantId: tile.el.dataset.participantId || '',
        source: tile.el.dataset.source || 'camera',
        trackId: tile.trackId,
        // Changes when the tile's media comes from a new receiver (after a move), whose counters
        // start again from 0; `stale`: the media is gone, the last frame is kept for a moment.
        mediaGeneration: tile.generation,
        stale: !!tile.staleUntil,
        framesDecoded: 0,
        frameWidth: 0,
        frameHeight: 0,
        packetsReceived: 0,
        // The tile's indicators: forwarded layer index (`receive_quality`) and its text.
        layer: forwardedLayer(tile.trackId)?.index ?? null,
        quality: tile.quality.textContent,
        speaking: tile.el.dataset.speaking === 'true',
        stage: tile.el.dataset.stage === 'true',
      };
      try {
        if (tile.receiver) sumInbound(await tile.receiver.getStats(), 'video', row);
      } catch (e) {
        /* receiver gone */
      }
      if (!row.frameWidth && tile.video.videoWidth) {
        row.frameWidth = tile.video.videoWidth;
        row.frameHeight = tile.video.videoHeight;
      }
      out.tiles.push(row);
    }
    for (const a of Array.from(s.audios.values())) {
      out.audio.tracks += 1;
      try {
        if (a.receiver) sumInbound(await a.receiver.getStats(), 'audio', out.audio);
      } catch (e) {
        /* receiver gone */
      }
    }
    return out;
  }

  window.kaskade = {
    get ws() {
      return sess ? sess.ws : null;
    },
    get publishPc() {
      return sess ? sess.publishPc : null;
    },
    get subscribePc() {
      return sess ? sess.subscribePc : null;
    },
    get participantId() {
      return state.participantId;
    },
    /** The WebSocket URL of the node currently serving the call (after redirects and moves). */
    nodeUrl: () => (sess ? sess.url : null),
    /** The other nodes the latest `joined` named, best first (where a move goes). */
    get alternates() {
      return call ? call.alternates.slice() : [];
    },
    /** Moves to another node started in this call (node lost, or `reconnect` asked). */
    get reconnects() {
      return call ? call.reconnects : 0;
    },
    /** 'lost', 'drain' or 'repair' while looking for a node, else null. */
    get moving() {
      return movingWhy();
    },
    /** performance.now() when the latest move started, or null. */
    get reconnectStartedAt() {
      return call ? call.reconnectStartedAt : null;
    },
    /** performance.now() of the first remote video frame shown after the latest move, or null. */
    get firstFrameAfterReconnectAt() {
      return call ? call.firstFrameAt : null;
    },
    get state() {
      return state;
    },
    get status() {
      return lastState;
    },
    /** Our role ('host' | 'speaker' | 'audience'), the room's settings, the audience count. */
    get role() {
      return state.role;
    },
    /** The room's latest settings: {only_hosts_publish, locked, lobby}. */
    get settings() {
      return Object.assign({}, state.settings);
    },
    /** Hosts: who waits in the lobby now, [{participant, name}] (the latest `lobby_changed`). */
    get lobby() {
      return state.lobby.map((w) => Object.assign({}, w));
    },
    /** Hosts: whether the room has a password, from the latest `room_password_set`; null: unknown. */
    get roomProtected() {
      return state.roomProtected;
    },
    get audience() {
      return state.audience;
    },
    get dominantSpeaker() {
      return state.dominantSpeaker;
    },
    get receiveQuality() {
      return state.receiveQuality;
    },
    /** Dynacast: the camera layers this page sends (lowest first); null until the node asked. */
    get layersSent() {
      return state.layersSent;
    },
    get handRaised() {
      return !!(call && call.handRaisedAt !== null);
    },
    /** Own published track ids by source (from the latest publish_answer). */
    get publishedTracks() {
      const out = {};
      for (const [mid, id] of Object.entries(state.published)) out[id] = state.publishedSources[mid] || 'unknown';
      return out;
    },
    /** Local camera/microphone/screen tracks that are still live (should be none in the audience). */
    liveLocalTracks() {
      const s = sess;
      const out = [];
      if (s) {
        for (const k of ['mic', 'cam', 'screen']) {
          const l = s.local[k];
          if (l && l.track && l.track.readyState === 'live') out.push(k);
        }
      }
      const v = ui.localVideo.srcObject;
      if (v) for (const t of v.getTracks()) if (t.readyState === 'live') out.push(`preview-${t.kind}`);
      return out;
    },
    /**
     * Publishes camera and microphone whatever our role (the page itself offers no way to as
     * audience): the node must refuse an audience member with `forbidden`. For tests.
     */
    publish() {
      const s = sess;
      if (!live(s) || !s.joined || s.pubStarted) return false;
      startPublishing(s, true).catch((e) => console.warn('kaskade: forced publish failed', e));
      return true;
    },
    /**
     * Access control: {loggedIn, user, role, tenant, name, source ('login' | 'invite' | null),
     * expiresAt (unix s), loginRequired (the node answered `unauthorized`), loginShown}. One
     * object, kept current.
     */
    get auth() {
      return authView;
    },
    /** Logs in as the login form does (resolves to true on success); for tests. */
    login(tenant, user, password) {
      ui.loginTenant.value = tenant || '';
      ui.loginUser.value = user || '';
      ui.loginPassword.value = password || '';
      return submitLogin();
    },
    logout: () => logout(),
    /**
     * End-to-end encryption: {enabled (this call encrypts), mode ('script-transform' |
     * 'encoded-streams' | null), encryptedFrames, decryptedFrames, decryptFailures,
     * encryptFailures} — frame counts since the page loaded.
     */
    get e2ee() {
      const e = call && call.e2ee;
      return Object.assign({ enabled: !!e, mode: e ? e.mode : null }, e2eeCounts);
    },
    stats,
    setLayer,
    join: () => join(),
    leave: () => leave(),
  };

  // ---------------------------------------------------------------------------------------------
  // Start-up
  // ---------------------------------------------------------------------------------------------

  function init() {
    ui.joinView = $('#join-view');
    ui.callView = $('#call-view');
    ui.joinForm = $('#join-form');
    ui.joinNote = $('#join-note');
    ui.room = $('#room');
    ui.name = $('#name');
    ui.optMic = $('#opt-mic');
    ui.optCam = $('#opt-cam');
    ui.join = $('#join');
    ui.leave = $('#leave');
    ui.muteMic = $('#mute-mic');
    ui.toggleCam = $('#toggle-cam');
    ui.shareScreen = $('#share-screen');
    ui.chatForm = $('#chat-form');
    ui.chatInput = $('#chat-input');
    ui.chatLog = $('#chat-log');
    ui.participants = $('#participants');
    ui.participantCount = $('#participant-count');
    ui.tiles = $('#tiles');
    ui.emptyHint = $('#empty-hint');
    ui.localPreview = $('#local-preview');
    ui.localVideo = $('#local-video');
    ui.localAvatar = $('#local-avatar');
    ui.localMicOff = $('#local-mic-off');
    ui.audioSinks = $('#audio-sinks');
    ui.status = $('#status');
    ui.roomLabel = $('#room-label');
    ui.errorBanner = $('#error-banner');
    ui.enableAudio = $('#enable-audio');
    ui.notice = $('#notice');
    ui.roleParticipant = $('#role-participant');
    ui.roleAudience = $('#role-audience');
    ui.roleLabel = $('#role-label');
    ui.lockedLabel = $('#locked-label');
    ui.audienceCount = $('#audience-count');
    ui.receiveEstimate = $('#receive-estimate');
    ui.raiseHand = $('#raise-hand');
    ui.classroomHint = $('#classroom-hint');
    ui.hostPanel = $('#host-panel');
    ui.onlyHostsPublish = $('#only-hosts-publish');
    ui.muteAll = $('#mute-all');
    ui.lockRoom = $('#lock-room');
    ui.endMeeting = $('#end-meeting');
    ui.handQueue = $('#hand-queue');
    ui.handCount = $('#hand-count');
    ui.handEmpty = $('#hand-empty');
    ui.lobbyLabel = $('#lobby-label');
    ui.lobbyToggle = $('#lobby-toggle');
    ui.lobbyList = $('#lobby-list');
    ui.lobbyCount = $('#lobby-count');
    ui.lobbyEmpty = $('#lobby-empty');
    ui.roomPasswordHost = $('#room-password-host');
    ui.roomPasswordInput = $('#room-password-input');
    ui.roomPasswordClear = $('#room-password-clear');
    ui.roomPasswordStatus = $('#room-password-status');
    ui.lobbyWait = $('#lobby-wait');
    ui.lobbyRoom = $('#lobby-room');
    ui.lobbyLeave = $('#lobby-leave');
    ui.roomPasswordForm = $('#room-password-form');
    ui.roomPasswordRoom = $('#room-password-room');
    ui.roomPasswordReason = $('#room-password-reason');
    ui.roomPassword = $('#room-password');
    ui.roomPasswordSubmit = $('#room-password-submit');
    ui.loginForm = $('#login-form');
    ui.loginReason = $('#login-reason');
    ui.loginReasonDefault = ui.loginReason.textContent;
    ui.loginTenant = $('#login-tenant');
    ui.loginUser = $('#login-user');
    ui.loginPassword = $('#login-password');
    ui.loginSubmit = $('#login-submit');
    ui.loginError = $('#login-error');
    ui.loginStatus = $('#login-status');
    ui.logout = $('#logout');
    ui.optE2ee = $('#opt-e2ee');
    ui.e2eeField = $('#e2ee-field');
    ui.e2eePassphrase = $('#e2ee-passphrase');
    ui.e2eeLabel = $('#e2ee-label');
    ui.e2eeText = $('#e2ee-text');

    ui.joinForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      join();
    });
    ui.leave.addEventListener('click', leave);
    ui.loginForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitLogin().catch((e) => {
        ui.loginError.textContent = `Login failed: ${describe(e)}`;
      });
    });
    ui.logout.addEventListener('click', logout);
    ui.muteMic.addEventListener('click', toggleMic);
    ui.toggleCam.addEventListener('click', toggleCam);
    ui.shareScreen.addEventListener('click', () => {
      toggleScreen().catch((e) => showError(`Screen sharing failed: ${describe(e)}`, false));
    });
    ui.chatForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      sendChat();
    });
    ui.errorBanner.addEventListener('click', hideError);
    ui.notice.addEventListener('click', hideNotice);
    ui.raiseHand.addEventListener('click', toggleHand);
    ui.onlyHostsPublish.addEventListener('change', setOnlyHostsPublish);
    ui.muteAll.addEventListener('click', muteAll);
    ui.lockRoom.addEventListener('click', toggleRoomLock);
    ui.endMeeting.addEventListener('click', endMeeting);
    ui.participants.addEventListener('click', onModerationClick);
    ui.handQueue.addEventListener('click', onModerationClick);
    ui.lobbyList.addEventListener('click', onModerationClick);
    ui.lobbyToggle.addEventListener('change', setLobby);
    ui.roomPasswordHost.addEventListener('submit', (ev) => {
      ev.preventDefault();
      sendRoomPassword(ui.roomPasswordInput.value);
    });
    ui.roomPasswordClear.addEventListener('click', () => sendRoomPassword(null));
    ui.lobbyLeave.addEventListener('click', leave);
    ui.roomPasswordForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitRoomPassword();
    });
    ui.enableAudio.addEventListener('click', enableAudio);
    ui.optE2ee.addEventListener('change', () => {
      syncE2eeForm();
      if (ui.optE2ee.checked && !ui.e2eePassphrase.value) ui.e2eePassphrase.focus();
    });
    window.addEventListener('pagehide', () => {
      if (live(sess)) {
        sess.leaving = true;
        send(sess, { type: 'leave' });
      }
    });

    const params = new URLSearchParams(window.location.search);
    relayOnly = params.get('relay') === '1';
    const room = params.get('room');
    const name = params.get('name');
    if (room !== null) ui.room.value = room;
    if (name !== null) ui.name.value = name.slice(0, MAX_NAME_LEN * 2);
    if (params.get('nocam') === '1') ui.optCam.checked = false;
    if (params.get('nomic') === '1') ui.optMic.checked = false;
    const role = params.get('role');
    if (role === 'audience') ui.roleAudience.checked = true;
    else if (role === 'participant' || role === 'speaker' || role === 'host') ui.roleParticipant.checked = true;
    // `?e2ee=` or, better, `#e2ee=` (a fragment never reaches the server): the room passphrase.
    const hash = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    const e2ee = hash.get('e2ee') ?? params.get('e2ee');
    if (e2ee) {
      ui.optE2ee.checked = true;
      ui.e2eePassphrase.value = e2ee.slice(0, E2EE_MAX_PASSPHRASE);
    }
    syncE2eeForm();
    const site = params.get('site');
    if (site && site.length <= 64 && !site.includes('/')) siteParam = site;

    // The access token: `?token=` (an invite link) first, else this tab's earlier login, else none
    // (fine with an --insecure-dev node; one with access control answers `unauthorized`).
    const token = params.get('token');
    if (token && token.length <= MAX_TOKEN_LEN) urlToken = token;
    const stored = loadStoredAuth();
    setAuth(urlToken ? inviteRecord(urlToken) : stored.auth);
    if (auth && auth.source === 'invite' && auth.room && !ui.room.value) ui.room.value = auth.room;

    setState('idle');
    setStatus('Not connected');
    updateControls();
    if (!urlToken && stored.expired) {
      authGone = 'Your login has expired. Log in again.';
      showLogin(authGone);
    }
    accessToken(); // an invite that has expired already gives way to this tab's login, or asks for one
    const loginFirst = params.get('login') === '1';
    if (loginFirst && ui.loginForm.hidden) showLogin('');
    if (params.get('autojoin') === '1') {
      // With ?login=1 and no token yet, join once logged in.
      if (loginFirst && !auth) pendingJoin = true;
      else ui.join.click();
    } else if (ui.loginForm.hidden) (ui.room.value ? ui.name : ui.room).focus();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
