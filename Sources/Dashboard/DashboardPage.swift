import Foundation

/// The dashboard's page: plain HTML, CSS and a little JavaScript, drawing with Chart.js, which it
/// loads from `/chart.js` (Debian's `libjs-chart.js`, served by ``DashboardHTTP``).
///
/// The page opens `/events` (Server-Sent Events; the browser's `EventSource` reconnects by itself),
/// takes the `history` event to fill the stage charts, then appends every `frame`. Charts are
/// reachable as `Chart.getChart('<canvas id>')` (ids: `throughput`, `lag`, `deadletters`,
/// `devices`, `averages`) and the last frame as `window.sfDashboard.last`.
// Written here: no template or front-end package does this job for us. Chart.js is not copied into the
// repository (docs/decisions/0012-metrics-through-a-topic-and-the-dashboard.md). The browser test reads
// the charts and `window.sfDashboard.last`.
package enum DashboardPage {
    struct PageConfig: Encodable {
        var title: String
        var stages: [String]
        var fields: [String]
        var maxPoints: Int
        var keyField: String
        var windowSeconds: Int64
    }

    /// The page for `config`.
    package static func html(config: DashboardConfig) -> String {
        let pageConfig = PageConfig(
            title: config.title, stages: config.stages, fields: config.valueFields, maxPoints: config.maxPoints,
            keyField: config.keyField ?? "key", windowSeconds: config.windowMs / 1000)
        let json = (try? JSONEncoder().encode(pageConfig)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        // Inside <script>: "</" must not close the element.
        let safeJSON = json.replacingOccurrences(of: "</", with: "<\\/")
        return
            template
            .replacingOccurrences(of: "{{TITLE}}", with: escapeHTML(config.title))
            .replacingOccurrences(of: "{{CONFIG}}", with: safeJSON)
    }

    static func escapeHTML(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static let template = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{TITLE}}</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1f2933; }
          header { display: flex; align-items: baseline; gap: 1em; padding: 10px 18px; background: #1f2933; color: #fff; }
          header h1 { font-size: 18px; margin: 0; font-weight: 600; }
          #status { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #9aa5b1; }
          #status.live { background: #16a34a; }
          #status.down { background: #dc2626; }
          .tiles { display: grid; grid-template-columns: repeat(5, 1fr); gap: 10px; padding: 12px 18px 0; }
          .tile { background: #fff; border-radius: 6px; padding: 8px 12px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
          .tile .n { font-size: 22px; font-weight: 600; }
          .tile .l { font-size: 12px; color: #616e7c; }
          .grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; padding: 10px 18px; }
          .card { background: #fff; border-radius: 6px; padding: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.08);
          height: 250px; position: relative; }
          .card.wide { grid-column: span 2; }
          .card select { position: absolute; right: 10px; top: 8px; z-index: 1; }
          table { width: 100%; border-collapse: collapse; font-size: 12px; }
          td, th { text-align: left; padding: 3px 6px; border-bottom: 1px solid #e4e7eb; }
          .dl { height: auto; min-height: 250px; overflow: hidden; }
        </style>
        </head>
        <body>
        <header><h1>{{TITLE}}</h1><span id="status">connecting…</span><span id="updated"></span></header>
        <div class="tiles">
          <div class="tile"><div class="n" id="ingested">0</div><div class="l">ingested</div></div>
          <div class="tile"><div class="n" id="persisted">0</div><div class="l">persisted</div></div>
          <div class="tile"><div class="n" id="dead-total">0</div><div class="l">dead letters (topic)</div></div>
          <div class="tile"><div class="n" id="lag-total">0</div><div class="l">consumer lag, all stages</div></div>
          <div class="tile"><div class="n" id="device-count">0</div><div class="l">devices</div></div>
        </div>
        <div class="grid">
          <div class="card"><canvas id="throughput"></canvas></div>
          <div class="card"><canvas id="lag"></canvas></div>
          <div class="card"><canvas id="deadletters"></canvas></div>
          <div class="card wide"><select id="field"></select><canvas id="devices"></canvas></div>
          <div class="card"><canvas id="averages"></canvas></div>
          <div class="card wide dl"><b>Latest dead letters</b>
            <table><thead><tr><th>time</th><th>stage</th><th>class</th><th>reason</th></tr></thead>
              <tbody id="dead-rows"></tbody></table></div>
          <div class="card dl"><b>Stages</b>
            <table><thead><tr><th>stage</th><th>in</th><th>out</th><th>dead</th><th>inst.</th><th>p99 ms</th></tr></thead>
              <tbody id="stage-rows"></tbody></table></div>
        </div>
        <script src="/chart.js"></script>
        <script>
        "use strict";
        const cfg = {{CONFIG}};
        const colors = ['#2563eb', '#16a34a', '#d97706', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d'];
        const fmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
        function options(title, yTitle) {
          return { animation: false, responsive: true, maintainAspectRatio: false, normalized: true,
            plugins: { title: { display: true, text: title }, legend: { position: 'bottom', labels: { boxWidth: 12 } } },
            scales: { x: { ticks: { maxTicksLimit: 6, autoSkip: true } },
              y: { beginAtZero: true, title: { display: true, text: yTitle } } } };
        }
        function stageChart(id, title, yTitle) {
          return new Chart(document.getElementById(id), { type: 'line', options: options(title, yTitle),
            data: { labels: [], datasets: cfg.stages.map((s, i) => ({ label: s, data: [], borderColor: colors[i % 8],
              backgroundColor: colors[i % 8], pointRadius: 0, borderWidth: 2, tension: 0.2, spanGaps: true })) } });
        }
        const throughput = stageChart('throughput', 'Throughput per stage', 'records/s in');
        const lag = stageChart('lag', 'Consumer lag per stage', 'records behind');
        const deadletters = stageChart('deadletters', 'Dead letters per stage', 'records/s');
        const devices = new Chart(document.getElementById('devices'), { type: 'bar', options: options('Per device', ''),
          data: { labels: [], datasets: [
            { label: 'latest', data: [], backgroundColor: '#2563eb' },
            { label: 'average, last ' + cfg.windowSeconds + ' s', data: [], backgroundColor: '#93c5fd' },
            { label: 'average since start', data: [], backgroundColor: '#d97706' }] } });
        devices.options.scales.y.beginAtZero = false;
        const averages = new Chart(document.getElementById('averages'), { type: 'line',
          options: options('Average over all devices, last ' + cfg.windowSeconds + ' s', ''),
          data: { labels: [], datasets: cfg.fields.map((f, i) => ({ label: f, data: [], borderColor: colors[i % 8],
            backgroundColor: colors[i % 8], pointRadius: 0, borderWidth: 2, tension: 0.2, spanGaps: true })) } });
        averages.options.scales.y.beginAtZero = false;
        const fieldSelect = document.getElementById('field');
        for (const f of cfg.fields) { const o = document.createElement('option'); o.value = o.textContent = f; fieldSelect.appendChild(o); }
        let field = cfg.fields[0];
        fieldSelect.addEventListener('change', () => {
          field = fieldSelect.value; if (state.last) { drawDevices(state.last); devices.update('none'); } });

        const state = { frames: 0, lastTime: 0, last: null };
        window.sfDashboard = state;
        function label(t) { return new Date(t).toLocaleTimeString('en-GB', { hour12: false }); }
        function trim(chart) {
          while (chart.data.labels.length > cfg.maxPoints) {
            chart.data.labels.shift(); for (const d of chart.data.datasets) d.data.shift(); }
        }
        function pushStages(t, points) {
          const byStage = {}; for (const p of points) byStage[p.stage] = p;
          for (const [chart, pick] of [[throughput, p => p.inRate],
              [lag, p => (p.lag === undefined || p.lag === null) ? null : p.lag], [deadletters, p => p.deadRate]]) {
            chart.data.labels.push(label(t));
            for (const d of chart.data.datasets) { const p = byStage[d.label]; d.data.push(p ? pick(p) : null); }
            trim(chart);
          }
          state.lastTime = t;
        }
        function drawDevices(f) {
          devices.data.labels = f.devices.map(d => d.id);
          devices.data.datasets[0].data = f.devices.map(d => d.latest[field] ?? null);
          devices.data.datasets[1].data = f.devices.map(d => d.windowAverage[field] ?? null);
          devices.data.datasets[2].data = f.devices.map(d => d.average[field] ?? null);
          devices.options.plugins.title.text = 'Per device (' + cfg.keyField + '): ' + field +
            (f.devicesRefused > 0 ? ' — ' + f.devicesRefused + ' readings of devices beyond the limit not shown' : '');
        }
        function text(id, v) { document.getElementById(id).textContent = v; }
        function cell(row, v) { const td = document.createElement('td'); td.textContent = v; row.appendChild(td); }
        function onFrame(f) {
          state.frames += 1; state.last = f;
          if (f.timeMs > state.lastTime) {
            pushStages(f.timeMs, f.stages);
            averages.data.labels.push(label(f.timeMs));
            for (const d of averages.data.datasets) d.data.push(f.fieldAverages[d.label] ?? null);
            trim(averages);
          }
          drawDevices(f);
          const st = {}; for (const p of f.stages) st[p.stage] = p;
          text('ingested', fmt.format(st.ingest ? st.ingest.recordsIn : 0));
          text('persisted', fmt.format(st.persist ? st.persist.recordsOut : 0));
          text('dead-total', fmt.format(f.deadLetters.total));
          text('lag-total', fmt.format(f.stages.reduce((a, p) => a + (p.lag || 0), 0)));
          text('device-count', fmt.format(f.devices.length));
          text('updated', 'updated ' + label(f.timeMs));
          const rows = document.getElementById('dead-rows'); rows.replaceChildren();
          for (const d of f.deadLetters.recent) { const r = document.createElement('tr'); cell(r, label(d.timeMs)); cell(r, d.stage);
            cell(r, d.errorClass); cell(r, d.message.slice(0, 90)); rows.appendChild(r); }
          const srows = document.getElementById('stage-rows'); srows.replaceChildren();
          for (const p of f.stages) { const r = document.createElement('tr'); cell(r, p.stage);
            cell(r, fmt.format(p.recordsIn)); cell(r, fmt.format(p.recordsOut)); cell(r, fmt.format(p.deadLettered));
            cell(r, p.instances); cell(r, p.p99EndToEndMs == null ? '–' : fmt.format(p.p99EndToEndMs)); srows.appendChild(r); }
          for (const c of [throughput, lag, deadletters, devices, averages]) c.update('none');
        }
        const status = document.getElementById('status');
        const events = new EventSource('/events');
        events.addEventListener('open', () => { status.textContent = 'live'; status.className = 'live'; });
        events.addEventListener('error', () => { status.textContent = 'reconnecting…'; status.className = 'down'; });
        events.addEventListener('history', e => {
          const h = JSON.parse(e.data);
          for (const c of [throughput, lag, deadletters]) { c.data.labels = []; for (const d of c.data.datasets) d.data = []; }
          for (const p of h) pushStages(p.timeMs, p.stages);
          for (const c of [throughput, lag, deadletters]) c.update('none');
        });
        events.addEventListener('frame', e => onFrame(JSON.parse(e.data)));
        </script>
        </body>
        </html>
        """#
}
