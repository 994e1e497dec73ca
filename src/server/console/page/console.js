// framegate's console: renders the admin listener's snapshots (/console/events) and a route's
// live tap (/console/tap). Plain DOM and SVG; every value goes in as text, never as markup.
'use strict';

const HISTORY = 60; // sparkline points: one per snapshot
const TAP_ROWS = 200;

let previous = null; // the last snapshot, for rates
const rates = new Map(); // route name -> [{in, out}]
const versions = new Map(); // module -> version hash last seen
let tap = null; // the EventSource of the tap being watched

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const num = (value) => el('td', { class: 'num' }, value);
const fixed = (value) => (value >= 10 || value === 0 ? Math.round(value) : value.toFixed(1));
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '');
const shortHash = (hash) => (hash ? hash.slice(0, 8) : 'not loaded');

function perSecond(now, before, seconds) {
  if (!before || seconds <= 0) return 0;
  return Math.max(0, now - before) / seconds;
}

function health(peer) {
  const badge = el('span', { class: 'badge ' + (peer.up ? 'up' : 'down') }, peer.up ? 'up' : 'down');
  return el('td', { class: 'health' }, badge,
    peer.reason ? el('div', { class: 'reason' }, peer.reason) : null,
    peer.warning ? el('div', { class: 'warning' }, 'warning: ' + peer.warning) : null);
}

function sparkline(points) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${HISTORY} 24`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const top = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
  for (const dir of ['in', 'out']) {
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    const start = HISTORY - points.length;
    line.setAttribute('points', points.map((p, i) => `${start + i},${23 - (p[dir] / top) * 22}`).join(' '));
    line.setAttribute('class', dir);
    svg.append(line);
  }
  return svg;
}

function codes(map) {
  return Object.entries(map || {}).map(([code, count]) => `${code}: ${count}`).join(', ');
}

function renderRoutes(snapshot, seconds) {
  const before = new Map((previous ? previous.routes : []).map((r) => [r.name, r]));
  const rows = snapshot.routes.map((route) => {
    const old = before.get(route.name);
    const rate = {
      in: perSecond(route.messages_in, old && old.messages_in, seconds),
      out: perSecond(route.messages_out, old && old.messages_out, seconds),
    };
    const points = rates.get(route.name) || [];
    if (old) points.push(rate);
    while (points.length > HISTORY) points.shift();
    rates.set(route.name, points);
    const chain = route.filters.length
      ? route.filters.map((f) => el('div', { class: 'link', 'data-module': f.module },
        el('code', {}, f.module), ' ', el('code', { class: 'version' }, shortHash(f.version_hash)),
        el('span', { class: 'muted' }, ' ' + time(f.loaded_at_ms))))
      : el('span', { class: 'muted' }, 'none');
    const sinks = route.sinks.concat(route.emit_sinks.map((s) => s + ' (emit)')).join(', ');
    return el('tr', { 'data-route': route.name },
      el('td', {}, el('strong', {}, route.name), el('div', { class: 'muted mono' }, route.path || `fed by ${route.feed}`)),
      el('td', {}, chain),
      el('td', {}, sinks || el('span', { class: 'muted' }, 'none')),
      el('td', {}, route.relay || ''),
      el('td', { class: 'num connections' }, route.connections),
      el('td', { class: 'num rate-in' }, fixed(rate.in)),
      el('td', { class: 'num rate-out' }, fixed(rate.out)),
      el('td', {}, sparkline(points)),
      el('td', { class: 'closes' }, codes(route.closes)),
      el('td', {}, snapshot.tap ? el('button', { type: 'button', 'data-tap': route.name }, 'tap') : ''));
  });
  document.querySelector('#routes tbody').replaceChildren(...rows);
  const select = document.getElementById('tap-route');
  const chosen = select.value;
  select.replaceChildren(...snapshot.routes.map((r) => el('option', { value: r.name }, r.name)));
  if (chosen) select.value = chosen;
}

// Sinks and sources alike: a row per peer with its health, its delivered rate, and the cells
// `cells(peer, count, rate)` gives.
function renderPeers(kind, snapshot, seconds, cells) {
  const before = new Map((previous ? previous[kind + 's'] : []).map((p) => [p.name, p]));
  const rows = snapshot[kind + 's'].map((peer) => {
    const count = (what) => peer.counts[what] || 0;
    const old = before.get(peer.name);
    const rate = perSecond(count('delivered'), old && (old.counts.delivered || 0), seconds);
    return el('tr', { ['data-' + kind]: peer.name, class: peer.up ? 'up' : 'down' },
      el('td', {}, el('strong', {}, peer.name)), el('td', {}, peer.kind || ''), health(peer),
      cells(peer, count, rate));
  });
  document.querySelector(`#${kind}s tbody`).replaceChildren(...rows);
}

function renderSinks(snapshot, seconds) {
  renderPeers('sink', snapshot, seconds, (sink, count, rate) => [
    num(sink.queue_size ? `${sink.queued} / ${sink.queue_size}` : ''), num(fixed(rate)),
    num(count('delivered')), num(count('retried')), num(count('failed')), num(count('dead_lettered'))]);
}

function renderSources(snapshot, seconds) {
  renderPeers('source', snapshot, seconds, (source, count, rate) => {
    const feed = source.feed
      ? `${source.feed.connected ? 'connected' : 'disconnected'}; ${codes(source.feed.events)}; paused ${fixed(source.feed.paused_seconds)} s`
      : '';
    return [num(fixed(rate)), num(count('delivered')), num(count('acked')), num(count('nacked')), el('td', {}, feed)];
  });
}

function renderFilters(snapshot) {
  const history = document.getElementById('history');
  const rows = snapshot.filters.map((filter) => {
    const seen = versions.get(filter.name);
    if (seen !== undefined && seen !== filter.version_hash) {
      history.prepend(el('li', {}, `${time(Date.now())} ${filter.name}: ${shortHash(seen)} → ${shortHash(filter.version_hash)}`));
    }
    versions.set(filter.name, filter.version_hash);
    const mean = filter.calls ? `${fixed((filter.call_seconds / filter.calls) * 1e6)} µs` : '';
    return el('tr', { 'data-filter': filter.name },
      el('td', {}, el('strong', {}, filter.name), el('div', { class: 'muted mono' }, filter.file)),
      el('td', {}, el('code', { class: 'version' }, filter.version_hash || 'not loaded')),
      el('td', {}, time(filter.loaded_at_ms)), num(filter.reloads),
      el('td', { class: 'reason' }, filter.last_reload_error || '',
        filter.reload_failures ? el('div', { class: 'muted' }, `${filter.reload_failures} refused`) : null),
      el('td', {}, codes(filter.failures)), num(filter.calls), num(mean));
  });
  document.querySelector('#filters tbody').replaceChildren(...rows);
}

function render(snapshot) {
  const seconds = previous ? (snapshot.at_ms - previous.at_ms) / 1000 : 0;
  renderRoutes(snapshot, seconds);
  renderSinks(snapshot, seconds);
  renderSources(snapshot, seconds);
  renderFilters(snapshot);
  const ready = document.getElementById('ready');
  ready.textContent = snapshot.shutting_down ? 'shutting down' : snapshot.ready ? 'ready' : 'not ready';
  ready.className = 'badge ' + (snapshot.ready ? 'up' : 'down');
  document.getElementById('updated').textContent = 'updated ' + time(snapshot.at_ms);
  document.getElementById('tap').hidden = !snapshot.tap;
  previous = snapshot;
}

function stopTap() {
  if (tap) tap.close();
  tap = null;
  document.getElementById('tap-toggle').textContent = 'watch';
  document.getElementById('tap-state').textContent = 'off';
}

function watchTap(route) {
  stopTap();
  const log = document.querySelector('#tap-log tbody');
  log.replaceChildren();
  tap = new EventSource('/console/tap?route=' + encodeURIComponent(route));
  document.getElementById('tap-toggle').textContent = 'stop';
  document.getElementById('tap-state').textContent = `connecting to ${route}…`;
  tap.addEventListener('watching', () => {
    document.getElementById('tap-state').textContent = `watching ${route}`;
  });
  tap.addEventListener('message', (event) => {
    const m = JSON.parse(event.data);
    if (m.skipped) {
      log.prepend(el('tr', { class: 'skipped' }, el('td', { colspan: 5, class: 'muted' }, `${m.skipped} left out (rate cap)`)));
    }
    log.prepend(el('tr', { class: 'tap-message', 'data-dir': m.dir },
      el('td', {}, time(m.at_ms)), el('td', {}, m.dir === 'in' ? '→ in' : '← out'), num(m.size),
      el('td', { class: 'preview mono' }, m.binary ? `hex ${m.preview}` : m.preview),
      el('td', { class: 'meta mono' }, m.meta.map(([k, v]) => `${k}=${v}`).join('  '))));
    while (log.rows.length > TAP_ROWS) log.deleteRow(-1);
  });
  tap.onerror = () => {
    document.getElementById('tap-state').textContent = 'tap lost; retrying';
  };
}

function start() {
  document.getElementById('tap-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (tap) stopTap();
    else watchTap(document.getElementById('tap-route').value);
  });
  document.getElementById('routes').addEventListener('click', (event) => {
    const route = event.target.getAttribute('data-tap');
    if (route) {
      document.getElementById('tap-route').value = route;
      watchTap(route);
    }
  });
  fetch('/console/snapshot').then((r) => r.json()).then(render);
  const events = new EventSource('/console/events');
  events.addEventListener('snapshot', (event) => render(JSON.parse(event.data)));
  events.onerror = () => {
    const ready = document.getElementById('ready');
    ready.textContent = 'disconnected';
    ready.className = 'badge down';
  };
}

start();
