// Kaskade web client: joins a room over the node's WebSocket signalling (`/ws`, see
// proto/src/signal.rs and docs/signalling.md), publishes microphone, camera and screen on a
// client-offered *publish* RTCPeerConnection and receives everyone else's tracks on a node-offered
// *subscribe* RTCPeerConnection. Plain browser JavaScript, no build step, no external resources.
'use strict';

(function () {
  // ---------------------------------------------------------------------------------------------
  // Constants (mirroring proto/src/signal.rs)
  // ---------------------------------------------------------------------------------------------

  const MAX_CHAT_LEN = 4096;
  const MAX_NAME_LEN = 64;
  const SOURCES = ['camera', 'microphone', 'screen', 'screen_audio', 'unknown'];
  const LAYERS = ['low', 'medium', 'high'];
  const ERROR_HIDE_MS = 6000; // non-fatal error banners disappear after this long
  const ANSWER_TIMEOUT_MS = 15000; // give up waiting for a publish_answer after this long
  const UNKNOWN_TRACK_GRACE_MS = 2000; // wait this long for track_published before showing a video anyway
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

  function participantInfo(v) {
    if (!isObj(v) || !okKey(v.id)) return null;
    return { id: v.id, name: isStr(v.name) ? v.name : '' };
  }

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

  // ---------------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------------

  /** The directories and negotiation maps of the current session (exposed as kaskade.state). */
  function emptyState() {
    return {
      room: null,
      name: null,
      participantId: null,
      participants: {}, // participant id -> {id, name}
      tracks: {}, // track id -> TrackInfo {id, participant, kind, source, layers, muted}
      subscribeTracks: {}, // mid -> track id, from the latest subscribe_offer
      published: {}, // mid -> own track id, from the latest publish_answer
      publishedSources: {}, // mid -> source, as sent in the latest publish_offer
    };
  }

  let state = emptyState();
  let sess = null; // the current session (one WebSocket + its two peer connections)
  let sessionCounter = 0;
  let lastState = 'idle';

  function newSession(wantMic, wantCam) {
    return {
      id: ++sessionCounter,
      ws: null,
      publishPc: null,
      subscribePc: null,
      joined: false,
      closed: false,
      leaving: false,
      wantMic,
      wantCam,
      media: null, // Promise<{stream, mic, cam}>
      local: { mic: null, cam: null, screen: null }, // {track, transceiver, muted, stream?}
      sources: new Map(), // publish transceiver -> TrackSource
      mutedSent: {}, // own track id -> last muted value sent
      pub: { busy: false, again: false, restart: false, pending: null },
      subQueue: Promise.resolve(),
      tiles: new Map(), // track id -> {el, video, receiver, track, ...}
      audios: new Map(), // track id -> {el, receiver, track}
      gone: new Set(), // track ids unpublished or of participants who left
      firstSeen: new Map(), // track id -> time its media arrived without directory entry
      graceTimer: null,
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
    ui.join.disabled = s === 'joining';
    ui.join.textContent = s === 'joining' ? 'Joining\u2026' : s === 'left' ? 'Join again' : 'Join';
    if (s === 'joining') ui.joinNote.textContent = '';
    if (s === 'left') ui.joinNote.textContent = 'You left the room.';
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function updateStatus() {
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
    if (sess && !sess.closed) return;
    const room = ui.room.value.trim();
    const name = ui.name.value.trim();
    if (!room || !name) {
      ui.joinNote.textContent = !room ? 'Enter a room name.' : 'Enter your name.';
      (!room ? ui.room : ui.name).focus();
      return;
    }
    hideError();
    clearCallUi();
    state = emptyState();
    state.room = room;
    state.name = name;

    const s = (sess = newSession(ui.optMic.checked, ui.optCam.checked));
    setState('joining');
    setStatus('Connecting\u2026');
    s.media = acquireMedia(s);

    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      fail(s, `Could not open the signalling connection: ${describe(e)}`);
      return;
    }
    s.ws = ws;
    ws.onopen = () => {
      if (!live(s)) return;
      setStatus('Joining\u2026');
      send(s, { type: 'join', room, name, auto_subscribe: true });
    };
    ws.onmessage = (ev) => {
      if (live(s)) onMessage(s, ev.data);
    };
    ws.onerror = () => {
      /* the close event follows and reports */
    };
    ws.onclose = (ev) => onSocketClose(s, ev);
  }

  function onSocketClose(s, ev) {
    if (!live(s)) return;
    const code = ev && ev.code;
    const reason = ev && ev.reason ? `: ${ev.reason}` : '';
    teardown(s);
    if (s.leaving) {
      setState('left');
      setStatus('You left the room.');
      return;
    }
    let text;
    if (code === 1009) {
      text = 'The node closed the connection: a message was larger than 64 KiB (1009).';
    } else if (!s.joined) {
      text = `Could not reach the node (connection closed, code ${code}${reason}).`;
    } else {
      text = `Disconnected from the node (code ${code}${reason}).`;
    }
    setState('error');
    setStatus(text);
    ui.joinNote.textContent = text;
    showError(text, true);
  }

  /** Ends the session with an error shown to the user. */
  function fail(s, text) {
    if (!live(s)) return;
    teardown(s);
    setState('error');
    setStatus(text);
    ui.joinNote.textContent = text;
    showError(text, true);
  }

  function leave() {
    const s = sess;
    if (!live(s)) return;
    s.leaving = true;
    send(s, { type: 'leave' });
    teardown(s);
    setState('left');
    setStatus('You left the room.');
  }

  /** Closes everything the session owns; idempotent. */
  function teardown(s) {
    if (s.closed) return;
    s.closed = true;
    if (s.pub.pending) {
      clearTimeout(s.pub.pending.timer);
      s.pub.pending.reject(new Error('session ended'));
      s.pub.pending = null;
    }
    if (s.graceTimer) clearTimeout(s.graceTimer);
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
    stopLocalMedia(s);
    if (s.media) s.media.then((m) => m.stream.getTracks().forEach((t) => t.stop())).catch(() => {});
    for (const t of s.tiles.values()) removeTileEl(t);
    s.tiles.clear();
    for (const a of s.audios.values()) removeAudioEl(a);
    s.audios.clear();
    ui.enableAudio.hidden = true;
    ui.localVideo.srcObject = null;
  }

  function stopLocalMedia(s) {
    for (const l of [s.local.mic, s.local.cam, s.local.screen]) {
      if (l && l.track) l.track.stop();
    }
  }

  function clearCallUi() {
    ui.tiles.replaceChildren();
    ui.audioSinks.replaceChildren();
    ui.participants.replaceChildren();
    ui.chatLog.replaceChildren();
    ui.participantCount.textContent = '';
    ui.emptyHint.hidden = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Incoming messages
  // ---------------------------------------------------------------------------------------------

  function onMessage(s, raw) {
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
    try {
      const r = dispatch(s, msg);
      if (r && typeof r.catch === 'function') {
        r.catch((e) => {
          console.error(`kaskade: handling ${msg.type} failed`, e);
          if (live(s)) showError(`Could not handle ${msg.type}: ${describe(e)}`, false);
        });
      }
    } catch (e) {
      console.error(`kaskade: handling ${msg.type} failed`, e);
    }
  }

  function dispatch(s, m) {
    switch (m.type) {
      case 'joined':
        return onJoined(s, m);
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
      case 'error':
        return onError(s, m);
      default:
        console.debug('kaskade: ignoring unknown message', m.type);
        return undefined;
    }
  }

  async function onJoined(s, m) {
    if (s.joined || !isStr(m.participant) || !m.participant) return;
    s.joined = true;
    state.participantId = m.participant;
    if (isStr(m.room)) state.room = m.room;
    if (Array.isArray(m.participants)) {
      for (const p of m.participants.map(participantInfo)) {
        if (p) state.participants[p.id] = p;
      }
    }
    if (!has(state.participants, state.participantId)) {
      state.participants[state.participantId] = { id: state.participantId, name: state.name };
    }
    if (Array.isArray(m.tracks)) {
      for (const t of m.tracks.map(trackInfo)) {
        if (t) state.tracks[t.id] = t;
      }
    }
    ui.roomLabel.textContent = state.room;
    ui.localAvatar.textContent = initial(state.name);
    setState('joined');
    updateStatus();
    renderParticipants();
    reconcile(s);
    updateControls();
    await startPublishing(s);
  }

  function onParticipantJoined(s, m) {
    const p = participantInfo(m.participant);
    if (!p) return;
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
    delete state.tracks[m.track];
    s.gone.add(m.track);
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
    if (!s.joined) {
      // Before `joined`, the only thing we sent is `join`: the node refused it.
      fail(s, `Could not join: ${message} [${code}]`);
      return;
    }
    if (code === 'invalid_sdp' && s.pub.pending) {
      const p = s.pub.pending;
      s.pub.pending = null;
      clearTimeout(p.timer);
      p.reject(new Error(`the node refused the publish offer: ${message}`));
    }
    if (fatal) {
      fail(s, `${message} [${code}]`);
      return;
    }
    showError(`${message} [${code}]`, false);
  }

  // ---------------------------------------------------------------------------------------------
  // Local media and the publish connection
  // ---------------------------------------------------------------------------------------------

  /** getUserMedia for what the user asked for; never rejects (falls back to less, reports why). */
  async function acquireMedia(s) {
    const result = { stream: new MediaStream(), mic: null, cam: null };
    if (!s.wantMic && !s.wantCam) return result;
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) {
      showError('This browser cannot access the camera or microphone (a secure origin is needed).', false);
      return result;
    }
    const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    const attempts = [];
    if (s.wantMic && s.wantCam) attempts.push({ audio, video }, { audio }, { video });
    else if (s.wantMic) attempts.push({ audio });
    else attempts.push({ video });
    let lastErr = null;
    for (const c of attempts) {
      try {
        const stream = await md.getUserMedia(c);
        result.stream = stream;
        result.mic = stream.getAudioTracks()[0] || null;
        result.cam = stream.getVideoTracks()[0] || null;
        break;
      } catch (e) {
        lastErr = e;
      }
    }
    if (!live(s)) {
      result.stream.getTracks().forEach((t) => t.stop());
      return result;
    }
    const missing = [];
    if (s.wantMic && !result.mic) missing.push('microphone');
    if (s.wantCam && !result.cam) missing.push('camera');
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
    const pc = new RTCPeerConnection({ iceServers: [] });
    s.publishPc = pc;
    pc.onicecandidate = (ev) => sendCandidate(s, 'publish', ev.candidate);
    pc.onconnectionstatechange = () => {
      if (live(s)) updateStatus();
    };
    pc.oniceconnectionstatechange = () => {
      if (!live(s)) return;
      updateStatus();
      if (pc.iceConnectionState === 'failed') negotiatePublish(s, true);
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

  async function startPublishing(s) {
    const media = await s.media;
    if (!live(s)) return;
    const pc = createPublishPc(s);
    if (media.mic) {
      const tr = pc.addTransceiver(media.mic, { direction: 'sendonly', streams: [media.stream] });
      s.sources.set(tr, 'microphone');
      s.local.mic = { track: media.mic, transceiver: tr, muted: false };
    }
    if (media.cam) {
      let tr;
      try {
        tr = pc.addTransceiver(media.cam, {
          direction: 'sendonly',
          streams: [media.stream],
          sendEncodings: CAMERA_ENCODINGS.map((e) => Object.assign({}, e)),
        });
      } catch (e) {
        console.warn('kaskade: simulcast not available, sending one layer', e);
        tr = pc.addTransceiver(media.cam, { direction: 'sendonly', streams: [media.stream] });
      }
      s.sources.set(tr, 'camera');
      s.local.cam = { track: media.cam, transceiver: tr, muted: false };
    }
    updateControls();
    updateStatus();
    if (pc.getTransceivers().length > 0) await negotiatePublish(s);
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
          if (live(s)) {
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
    const iceRestart = s.pub.restart;
    s.pub.restart = false;
    const offer = await pc.createOffer(iceRestart ? { iceRestart: true } : undefined);
    if (!live(s)) return;
    await pc.setLocalDescription(offer);
    if (!live(s)) return;

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
    if (!live(s)) return;
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

  function toggleMic() {
    const s = sess;
    if (!live(s) || !s.local.mic) return;
    const l = s.local.mic;
    l.muted = !l.muted;
    l.track.enabled = !l.muted;
    syncMuted(s, l);
    updateControls();
    renderParticipants();
  }

  function toggleCam() {
    const s = sess;
    if (!live(s) || !s.local.cam) return;
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
    const tr = s.publishPc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    s.sources.set(tr, 'screen');
    s.local.screen = { track, transceiver: tr, muted: false, stream };
    track.addEventListener('ended', () => {
      if (live(s) && s.local.screen && s.local.screen.track === track) stopScreenShare(s);
    });
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
    ui.shareScreen.disabled = !s || !s.publishPc || !canShare;
    ui.shareScreen.setAttribute('aria-pressed', screen ? 'true' : 'false');
    ui.shareScreen.classList.toggle('active', !!screen);
    ui.shareScreen.querySelector('.label').textContent = screen ? 'Stop sharing' : 'Share screen';

    ui.localPreview.dataset.camera = cam && !cam.muted ? 'on' : 'off';
    ui.localMicOff.hidden = !(mic && mic.muted);
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
    const pc = new RTCPeerConnection({ iceServers: [] });
    s.subscribePc = pc;
    pc.onicecandidate = (ev) => sendCandidate(s, 'subscribe', ev.candidate);
    pc.ontrack = (ev) => {
      if (!live(s)) return;
      // The track starts "muted" until media flows; refresh the tile when that changes.
      ev.track.onunmute = () => {
        if (live(s)) reconcile(s);
      };
      reconcile(s);
    };
    pc.onconnectionstatechange = () => {
      if (live(s)) updateStatus();
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

    for (const [id, tile] of s.tiles) {
      if (!wantTiles.has(id)) {
        removeTileEl(tile);
        s.tiles.delete(id);
      }
    }
    for (const [id, entry] of wantTiles) updateTile(s, entry);

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
      tile.video.srcObject = new MediaStream([entry.track]);
      tile.video.play().catch(() => {});
    }
    tile.receiver = entry.receiver;
    tile.info = entry.info;
    tile.participantId = entry.info ? entry.info.participant : '';
    tile.source = entry.info && entry.info.source === 'screen' ? 'screen' : 'camera';
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

    el.append(video, placeholder, footer, layer);
    el.addEventListener('click', () => el.classList.toggle('focused'));
    return { el, video, placeholder, avatar, name, mic, layer, trackId: entry.trackId, track: null, receiver: null };
  }

  /** Updates a tile's attributes, label and indicators from the directories. */
  function refreshTile(tile) {
    const info = has(state.tracks, tile.trackId) ? state.tracks[tile.trackId] : tile.info;
    const pid = info ? info.participant : '';
    const source = info && info.source === 'screen' ? 'screen' : 'camera';
    tile.participantId = pid;
    tile.source = source;
    tile.el.dataset.participantId = pid;
    tile.el.dataset.source = source;
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

  function renderParticipants() {
    const s = sess;
    const ids = Object.keys(state.participants);
    const self = state.participantId;
    ids.sort((a, b) => (a === self ? -1 : b === self ? 1 : 0));
    const items = [];
    for (const id of ids) {
      const p = state.participants[id];
      const li = document.createElement('li');
      li.dataset.participantId = id;
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
      const sharing = Object.values(state.tracks).some((t) => t.participant === id && t.source === 'screen');
      if (sharing) {
        const tag = document.createElement('span');
        tag.className = 'tag accent';
        tag.textContent = 'sharing';
        li.appendChild(tag);
      }
      const muted = id === self ? !!(s && s.local.mic && s.local.mic.muted) : micMuted(id);
      if (muted) {
        const m = document.createElement('span');
        m.className = 'participant-muted';
        m.title = 'Microphone muted';
        m.appendChild(svgIcon(MIC_OFF_PATHS));
        li.appendChild(m);
        li.dataset.muted = 'true';
      }
      items.push(li);
    }
    ui.participants.replaceChildren(...items);
    ui.participantCount.textContent = ids.length ? String(ids.length) : '';
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
        framesDecoded: 0,
        frameWidth: 0,
        frameHeight: 0,
        packetsReceived: 0,
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
    get state() {
      return state;
    },
    get status() {
      return lastState;
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

    ui.joinForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      join();
    });
    ui.leave.addEventListener('click', leave);
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
    ui.enableAudio.addEventListener('click', enableAudio);
    window.addEventListener('pagehide', () => {
      if (live(sess)) {
        sess.leaving = true;
        send(sess, { type: 'leave' });
      }
    });

    const params = new URLSearchParams(window.location.search);
    const room = params.get('room');
    const name = params.get('name');
    if (room !== null) ui.room.value = room;
    if (name !== null) ui.name.value = name.slice(0, MAX_NAME_LEN * 2);
    if (params.get('nocam') === '1') ui.optCam.checked = false;
    if (params.get('nomic') === '1') ui.optMic.checked = false;

    setState('idle');
    setStatus('Not connected');
    updateControls();
    if (params.get('autojoin') === '1') ui.join.click();
    else (ui.room.value ? ui.name : ui.room).focus();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
