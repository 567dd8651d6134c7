import { describe, expect, it } from "vitest";

import { figureLine } from "./diagnostics";

describe("figureLine", () => {
  it("prints a figure the way Prometheus does, integers without decimals", () => {
    expect(figureLine({ name: "spike_store_hits_total", labels: 'tier="sqlite"', value: 3 })).toBe(
      'spike_store_hits_total{tier="sqlite"} 3',
    );
    expect(figureLine({ name: "spike_rooms_open", labels: "", value: 0.25 })).toBe("spike_rooms_open 0.250");
  });
});
