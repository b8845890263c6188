// The part of autocannon's (untyped) API bench/serve.ts uses.
declare module 'autocannon' {
  interface Histogram { average: number; p50: number; p99: number; total?: number; min: number; max: number }
  interface Result {
    requests: Histogram;
    latency: Histogram;
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    '2xx': number;
  }
  interface Options {
    url: string;
    connections?: number;
    duration?: number;
    amount?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    requests?: { method?: string; path?: string; body?: string; headers?: Record<string, string> }[];
    timeout?: number;
  }
  function autocannon(options: Options): Promise<Result>;
  export default autocannon;
}
