// CRC-32C (Castagnoli) with the CPU's crc32 instruction (SSE4.2), which computes exactly the
// checksum of format/crc32c.ts and SPEC §3; format/crc32c.ts's table code where it is missing.
#pragma once
#include <cstddef>
#include <cstdint>

// Whether this CPU has the instruction (checked once).
bool crc32c_native_available();
// crc32c(data, previous) of format/crc32c.ts: `previous` continues an earlier checksum.
uint32_t crc32c_native(const uint8_t* data, size_t len, uint32_t previous);
