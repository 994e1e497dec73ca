// Builds textonly.zig into zig-out/bin/textonly.wasm: `python -m ziglang build` (Zig 0.15+,
// where C headers come in through translate-c rather than @cImport).
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.resolveTargetQuery(.{ .cpu_arch = .wasm32, .os_tag = .freestanding });
    const header = b.addTranslateC(.{
        .root_source_file = b.path("../include/framegate.h"),
        .target = target,
        .optimize = .ReleaseSmall,
        .link_libc = false,
    });
    const filter = b.addExecutable(.{
        .name = "textonly",
        .root_module = b.createModule(.{
            .root_source_file = b.path("textonly.zig"),
            .target = target,
            .optimize = .ReleaseSmall,
            .imports = &.{.{ .name = "framegate", .module = header.createModule() }},
        }),
    });
    filter.entry = .disabled;
    filter.rdynamic = true;
    b.installArtifact(filter);
}
