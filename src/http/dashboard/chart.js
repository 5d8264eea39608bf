// A small hand-made line chart on a <canvas>: time on x (the last hour), one or more series on y,
// colours from the stylesheet's --series-N variables (so dark mode follows). The canvas is
// decorative for screen readers (aria-hidden by the caller); the numbers are in the cards.

export class LineChart {
  /**
   * canvas: the element; series: [{key, label, color: "--series-1"}]; opts: {window: seconds,
   * format: (n) => text for the y axis}.
   */
  constructor(canvas, series, opts = {}) {
    this.canvas = canvas;
    this.series = series;
    this.window = opts.window || 3600;
    this.format = opts.format || ((n) => String(Math.round(n)));
    // Whole numbers only (connections): grid lines fall on integers.
    this.integer = !!opts.integer;
    this.samples = [];
    this.pending = false;
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(canvas);
  }

  /** Replaces all samples ({t: unix seconds, [key]: number}), oldest first. */
  set(samples) {
    // Samples pushed by the stream while the series was on its way stay.
    const last = samples.length ? samples[samples.length - 1].t : -Infinity;
    const newer = this.samples.filter((s) => s.t > last);
    this.samples = samples.concat(newer).slice(-this.window);
    this.draw();
  }

  /** Adds the newest sample. */
  push(sample) {
    const last = this.samples[this.samples.length - 1];
    if (last && sample.t <= last.t) return;
    this.samples.push(sample);
    const cut = sample.t - this.window;
    while (this.samples.length && this.samples[0].t < cut) this.samples.shift();
    this.draw();
  }

  destroy() {
    this.resize.disconnect();
  }

  /** Draws on the next frame (several pushes in one frame draw once). */
  draw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.paint();
    });
  }

  paint() {
    const canvas = this.canvas;
    const rect = canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * ratio);
    canvas.height = Math.round(rect.height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const css = getComputedStyle(canvas);
    const color = (name) => css.getPropertyValue(name).trim() || "#888";
    const font = "12px " + (css.fontFamily || "sans-serif");
    const w = rect.width;
    const hgt = rect.height;
    ctx.clearRect(0, 0, w, hgt);

    const now = this.samples.length ? this.samples[this.samples.length - 1].t : Date.now() / 1000;
    const start = now - this.window;
    let max = 0;
    for (const s of this.samples) for (const k of this.series) max = Math.max(max, s[k.key] || 0);
    let top = niceCeiling(max);
    let rows = 4;
    if (this.integer) {
      top = Math.max(top, 4);
      rows = [4, 5, 2].find((d) => top % d === 0) || 1;
    }

    ctx.font = font;
    const labelWidth = Math.max(ctx.measureText(this.format(top)).width, 24) + 10;
    const left = labelWidth;
    const right = w - 8;
    const bottom = hgt - 22;
    const topY = 8;
    const x = (t) => left + ((t - start) / this.window) * (right - left);
    const y = (v) => bottom - (v / top) * (bottom - topY);

    // Grid and y labels.
    ctx.strokeStyle = color("--grid");
    ctx.fillStyle = color("--muted");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= rows; i++) {
      const v = (top / rows) * i;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(right, yy);
      ctx.stroke();
      ctx.fillText(this.format(v), left - 6, yy);
    }
    // Time labels ("−50 min" ... "now"), as many as fit: 6 (every 10 min), 3 or 2.
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const fit = (right - left) / 64;
    const labels = fit >= 6 ? 6 : fit >= 3 ? 3 : 2;
    const step = this.window / labels;
    for (let i = 0; i <= labels; i++) {
      const t = start + step * i;
      const ago = Math.round((now - t) / 60);
      ctx.fillText(ago === 0 ? "now" : "−" + ago + " min", Math.min(Math.max(x(t), left + 20), right - 16), bottom + 6);
    }

    // Series.
    ctx.lineJoin = "round";
    ctx.lineWidth = 1.8;
    for (const k of this.series) {
      ctx.strokeStyle = color(k.color);
      ctx.beginPath();
      let started = false;
      let prev = null;
      for (const s of this.samples) {
        const v = s[k.key];
        // A gap of more than 5 s (the broker was away, or the stream) breaks the line.
        const gap = prev !== null && s.t - prev > 5;
        if (v === undefined || v === null || gap) started = false;
        if (v !== undefined && v !== null) {
          if (started) ctx.lineTo(x(s.t), y(v));
          else ctx.moveTo(x(s.t), y(v));
          started = true;
        }
        prev = s.t;
      }
      ctx.stroke();
    }
    if (!this.samples.length) {
      ctx.fillStyle = color("--muted");
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("waiting for data…", (left + right) / 2, (topY + bottom) / 2);
    }
  }
}

/** The y axis' top: 1, 2, 2.5 or 5 times a power of ten, at least 1. */
function niceCeiling(v) {
  if (!(v > 1)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
