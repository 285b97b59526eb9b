#pragma once
// Reader of the engine file format v1 (docs/engine_format.md): maps the file read-only,
// checks its header and checksum, and hands out views of the metadata and the weight blob.
// The metadata JSON is not parsed here; the caller owns its schema.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace trtllm {

inline constexpr std::string_view kEngineMagic{"TLLMENG\0", 8};
inline constexpr std::uint32_t kEngineFormatVersion = 1;
inline constexpr std::size_t kEngineHeaderSize = 64;
inline constexpr std::size_t kEngineAlignment = 64;

// A file that is not a readable engine of this format version. The message names the file
// and the bad value; Python sees it as trtllm_runtime.EngineFormatError (a ValueError).
class EngineFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// CRC-32 with the zlib/IEEE polynomial (reflected 0xEDB88320), equal to Python's
// zlib.crc32(data, crc). Pass the previous result as `crc` to continue a running checksum.
std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;

namespace detail {
// munmap as a unique_ptr deleter: a mapping is released exactly once, also when a check in
// EngineFile's constructor throws.
struct Unmap {
  std::size_t size = 0;
  void operator()(const std::byte* addr) const noexcept;
};
}  // namespace detail

// A validated, memory-mapped engine file. Move-only; the mapping lives as long as the object,
// so views returned by metadata_json() and data() must not outlive it. The file must not be
// rewritten in place while mapped (the writer renames a new file over it instead).
class EngineFile {
 public:
  // Throws std::system_error when the file cannot be opened or mapped (Python: OSError, e.g.
  // FileNotFoundError), EngineFormatError on bad magic, another format version, a corrupt
  // header, a size mismatch (truncation), or, if verify_checksum, a CRC-32 mismatch.
  explicit EngineFile(const std::string& path, bool verify_checksum = true);

  const std::string& path() const noexcept { return path_; }
  std::uint32_t format_version() const noexcept { return format_version_; }
  std::size_t file_size() const noexcept { return file_size_; }
  std::uint32_t checksum() const noexcept { return crc32_; }

  // UTF-8 JSON text, exactly metadata_size bytes (not NUL-terminated).
  std::string_view metadata_json() const noexcept;
  // The weight blob: starts at data_offset (64-byte aligned in the file, and so in memory,
  // since mappings are page-aligned).
  const std::byte* data() const noexcept;
  std::size_t data_size() const noexcept { return data_size_; }

 private:
  std::string path_;
  std::unique_ptr<const std::byte, detail::Unmap> mapping_;  // the whole file, read-only
  std::size_t file_size_ = 0;
  std::uint32_t format_version_ = 0;
  std::uint64_t metadata_size_ = 0;
  std::uint64_t data_offset_ = 0;
  std::uint64_t data_size_ = 0;
  std::uint32_t crc32_ = 0;
};

}  // namespace trtllm
