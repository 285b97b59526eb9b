#include "trtllm/engine_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <system_error>

namespace trtllm {
namespace {

// Slicing-by-16, the 16-byte variant of Intel's slicing-by-8 (Kounavis & Berry 2005): table k
// maps a byte to its CRC contribution k bytes further on, so 16 bytes are folded per step with
// independent lookups: about 2.4 GB/s on one x86-64 core, several times the bytewise loop.
using CrcTables = std::array<std::array<std::uint32_t, 256>, 16>;

constexpr CrcTables make_crc_tables() {
  CrcTables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t s = 1; s < t.size(); ++s) {
    for (std::size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  }
  return t;
}

constexpr CrcTables kCrc = make_crc_tables();

// Explicit little-endian loads: the format is little-endian whatever the host is; compilers
// turn these into single moves on x86-64 and aarch64.
std::uint32_t load_u32(const unsigned char* p) {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
         std::uint32_t{p[3]} << 24;
}

std::uint64_t load_u64(const unsigned char* p) {
  return std::uint64_t{load_u32(p)} | std::uint64_t{load_u32(p + 4)} << 32;
}

std::string hex_bytes(const unsigned char* p, std::size_t n) {
  std::string out;
  char buf[4];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, i ? " %02x" : "%02x", p[i]);
    out += buf;
  }
  return out;
}

std::string hex32(std::uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Closes a file descriptor on scope exit; the mapping outlives it.
struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};

}  // namespace

std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc) noexcept {
  auto p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (; size >= 16; p += 16, size -= 16) {
    const std::uint32_t w0 = load_u32(p) ^ crc;
    const std::uint32_t w1 = load_u32(p + 4);
    const std::uint32_t w2 = load_u32(p + 8);
    const std::uint32_t w3 = load_u32(p + 12);
    crc = kCrc[15][w0 & 0xFF] ^ kCrc[14][(w0 >> 8) & 0xFF] ^ kCrc[13][(w0 >> 16) & 0xFF] ^
          kCrc[12][w0 >> 24] ^ kCrc[11][w1 & 0xFF] ^ kCrc[10][(w1 >> 8) & 0xFF] ^
          kCrc[9][(w1 >> 16) & 0xFF] ^ kCrc[8][w1 >> 24] ^ kCrc[7][w2 & 0xFF] ^
          kCrc[6][(w2 >> 8) & 0xFF] ^ kCrc[5][(w2 >> 16) & 0xFF] ^ kCrc[4][w2 >> 24] ^
          kCrc[3][w3 & 0xFF] ^ kCrc[2][(w3 >> 8) & 0xFF] ^ kCrc[1][(w3 >> 16) & 0xFF] ^
          kCrc[0][w3 >> 24];
  }
  for (; size > 0; ++p, --size) crc = kCrc[0][(crc ^ *p) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void detail::Unmap::operator()(const std::byte* addr) const noexcept {
  ::munmap(const_cast<std::byte*>(addr), size);
}

EngineFile::EngineFile(const std::string& path, bool verify_checksum) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), path);
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), path);
  if (S_ISDIR(st.st_mode)) throw std::system_error(EISDIR, std::generic_category(), path);
  if (!S_ISREG(st.st_mode)) throw EngineFormatError(path + ": not a regular file");
  file_size_ = static_cast<std::size_t>(st.st_size);

  // An empty file cannot be mapped; it falls through to the "truncated" check below.
  if (file_size_ > 0) {
    void* addr = ::mmap(nullptr, file_size_, PROT_READ, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) throw std::system_error(errno, std::generic_category(), path);
    mapping_ = {static_cast<const std::byte*>(addr), detail::Unmap{file_size_}};
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(mapping_.get());

  // Magic first, on however many bytes exist, so that a short file of another kind is
  // reported as "not an engine file" and a short engine file as "truncated".
  const std::size_t magic_len = std::min(file_size_, kEngineMagic.size());
  if (std::string_view(reinterpret_cast<const char*>(bytes), magic_len) !=
      kEngineMagic.substr(0, magic_len)) {
    throw EngineFormatError(path + ": not an engine file: magic bytes are " +
                            hex_bytes(bytes, magic_len) + ", expected " +
                            hex_bytes(reinterpret_cast<const unsigned char*>(kEngineMagic.data()),
                                      kEngineMagic.size()) +
                            " (\"TLLMENG\\0\")");
  }
  if (file_size_ < kEngineHeaderSize) {
    throw EngineFormatError(path + ": engine file truncated: " + std::to_string(file_size_) +
                            " bytes, shorter than the " + std::to_string(kEngineHeaderSize) +
                            "-byte header");
  }

  format_version_ = load_u32(bytes + 8);
  if (format_version_ != kEngineFormatVersion) {
    throw EngineFormatError(path + ": engine format version " + std::to_string(format_version_) +
                            " is not supported: this runtime reads version " +
                            std::to_string(kEngineFormatVersion) +
                            "; rebuild the engine with a matching trtllm-build");
  }
  metadata_size_ = load_u64(bytes + 16);
  data_offset_ = load_u64(bytes + 24);
  data_size_ = load_u64(bytes + 32);
  crc32_ = load_u32(bytes + 40);

  // The header is not covered by the checksum, so its unused bytes must be exactly zero.
  bool reserved_zero = load_u32(bytes + 12) == 0;
  for (std::size_t i = 44; i < kEngineHeaderSize; ++i) reserved_zero = reserved_zero && bytes[i] == 0;
  if (!reserved_zero) {
    throw EngineFormatError(path + ": corrupt engine header: reserved bytes (12..15, 44..63) "
                                   "are not zero");
  }
  if (data_offset_ % kEngineAlignment != 0 || data_offset_ < kEngineHeaderSize ||
      metadata_size_ > data_offset_ - kEngineHeaderSize) {
    throw EngineFormatError(path + ": corrupt engine header: data_offset " +
                            std::to_string(data_offset_) + " must be a multiple of " +
                            std::to_string(kEngineAlignment) + " and at least 64 + metadata_size (" +
                            std::to_string(metadata_size_) + ")");
  }
  // data_offset and data_size come from the file: compare without overflowing.
  if (data_offset_ > file_size_ || data_size_ != file_size_ - data_offset_) {
    const bool overflows = data_size_ > UINT64_MAX - data_offset_;
    const bool truncated = overflows || data_offset_ + data_size_ > file_size_;
    throw EngineFormatError(
        path + (truncated ? ": engine file truncated" : ": engine file size mismatch") +
        ": expected " +
        (overflows ? std::string("more than 2^64") : std::to_string(data_offset_ + data_size_)) +
        " bytes (data_offset " + std::to_string(data_offset_) + " + data_size " +
        std::to_string(data_size_) + "), got " + std::to_string(file_size_));
  }

  if (verify_checksum) {
    const std::uint32_t actual =
        crc32(bytes + kEngineHeaderSize, file_size_ - kEngineHeaderSize);
    if (actual != crc32_) {
      throw EngineFormatError(path + ": engine file checksum mismatch: header has CRC-32 " +
                              hex32(crc32_) + ", contents give " + hex32(actual) +
                              " (corrupt or partially written file)");
    }
  }
}

std::string_view EngineFile::metadata_json() const noexcept {
  return {reinterpret_cast<const char*>(mapping_.get()) + kEngineHeaderSize,
          static_cast<std::size_t>(metadata_size_)};
}

const std::byte* EngineFile::data() const noexcept { return mapping_.get() + data_offset_; }

}  // namespace trtllm
