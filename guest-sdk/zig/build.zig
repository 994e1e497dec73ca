// Builds textonly.zig into zig-out/bin/textonly.wasm: `python -m ziglang build`. The header
// comes in through translate-c (Zig has no @cImport any more), wrapped by framegate.zig.
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.resolveTargetQuery(.{ .cpu_arch = .wasm32, .os_tag = .freestanding });
    const header = b.addTranslateC(.{
        .root_source_file = b.path("../include/framegate.h"),
        .target = target,
        .optimize = .ReleaseSmall,
        .link_libc = false,
    });
    const framegate = b.createModule(.{
        .root_source_file = b.path("framegate.zig"),
        .imports = &.{.{ .name = "framegate_h", .module = header.createModule() }},
    });
    const filter = b.addExecutable(.{
        .name = "textonly",
        .root_module = b.createModule(.{
            .root_source_file = b.path("textonly.zig"),
            .target = target,
            .optimize = .ReleaseSmall,
            .imports = &.{.{ .name = "framegate", .module = framegate }},
        }),
    });
    filter.entry = .disabled;
    filter.rdynamic = true;
    b.installArtifact(filter);
}
