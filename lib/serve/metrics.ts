// Prometheus text exposition (format 0.0.4) for the server: counters, gauges and histograms
// with labels, kept in plain maps (a handful of series; no client library needed).

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
  return `{${keys.map((k) => `${k}="${esc(labels[k])}"`).join(',')}}`;
}

function num(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return Number.isNaN(v) ? 'NaN' : String(v);
}

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

export class Counter implements Family {
  readonly type = 'counter';
  private readonly series = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const s = this.series.get(key);
    if (s) s.value += by;
    else this.series.set(key, { labels, value: by });
  }
  get(labels: Labels = {}): number {
    return this.series.get(labelText(labels))?.value ?? 0;
  }
  render(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${labelText(s.labels)} ${num(s.value)}`);
  }
}

/** A gauge read when scraped (queue depths, requests in flight). */
export class Gauge implements Family {
  readonly type = 'gauge';
  private readonly sources: { labels: Labels; read: () => number }[] = [];
  constructor(readonly name: string, readonly help: string) {}
  track(labels: Labels, read: () => number): void {
    this.sources.push({ labels, read });
  }
  render(): string[] {
    return this.sources.map((s) => `${this.name}${labelText(s.labels)} ${num(s.read())}`);
  }
}

export class Histogram implements Family {
  readonly type = 'histogram';
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(readonly name: string, readonly help: string, private readonly buckets: readonly number[]) {}
  observe(labels: Labels, value: number): void {
    const key = labelText(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }
  render(): string[] {
    const out: string[] = [];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket${labelText({ ...s.labels, le: num(b) })} ${s.counts[i]}`));
      out.push(`${this.name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
      out.push(`${this.name}_sum${labelText(s.labels)} ${num(s.sum)}`);
      out.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return out;
  }
}

const LATENCY = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/** Every series the server exports. */
export class ServeMetrics {
  readonly requests = new Counter('gainrag_http_requests_total', 'HTTP requests answered, by route and status');
  readonly latency = new Histogram('gainrag_http_request_duration_seconds', 'Time from request to response, by route', LATENCY);
  readonly rejected = new Counter('gainrag_queue_rejected_total', 'Requests refused because a batch queue was full (429)');
  readonly cancelled = new Counter('gainrag_queue_cancelled_total', 'Queued or running requests cancelled (timeout or client gone)');
  readonly queueDepth = new Gauge('gainrag_queue_depth', 'Requests waiting for a batch, by queue');
  readonly inflight = new Gauge('gainrag_http_requests_in_flight', 'Requests being handled');
  readonly batchRequests = new Histogram('gainrag_batch_requests', 'Requests packed into one engine call, by queue', SIZES);
  readonly batchItems = new Histogram('gainrag_batch_inputs', 'Inputs (texts, pairs, prompts) in one engine call, by queue', SIZES);
  readonly batchSeconds = new Histogram('gainrag_batch_duration_seconds', 'Engine call time per batch, by queue', LATENCY);
  readonly tokens = new Counter('gainrag_tokens_total', 'Tokens processed, by queue and kind (estimated: input length estimate used for packing; prompt, completion: counted)');

  private readonly families: Family[] = [
    this.requests, this.latency, this.inflight, this.queueDepth, this.rejected, this.cancelled,
    this.batchRequests, this.batchItems, this.batchSeconds, this.tokens,
  ];

  render(): string {
    const lines: string[] = [];
    for (const f of this.families) {
      lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...f.render());
    }
    return `${lines.join('\n')}\n`;
  }
}
