//! The resource report of `ptxas -v`: registers, barriers, shared memory, stack frame and
//! spills of every entry function in a compiled file.
//!
//! nvcc prints it to stderr (`-Xptxas -v`), NVRTC to the program log (`--ptxas-options=-v`,
//! where the property lines carry a `ptxas         .` prefix). The shape, per entry:
//!
//! ```text
//! ptxas info    : Compiling entry function '_Z2tkILi128EEvPf' for 'sm_90a'
//! ptxas info    : Function properties for _Z2tkILi128EEvPf
//!     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//! ptxas info    : Used 10 registers, used 1 barriers, 512 bytes smem
//! ptxas info    : Compile time = 0.867 ms
//! ```
//!
//! Non-inlined device functions get a `Function properties for` block of their own, outside
//! any entry; older releases omit `used N barriers`, some targets add `N bytes cmem[k]` and
//! `N bytes cumulative stack size`. Fields the parser does not know are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What ptxas reports for one entry function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelResources {
    pub registers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barriers: Option<u32>,
    /// Static shared memory (`__shared__` arrays), bytes; dynamic shared memory is the launch's.
    pub static_smem_bytes: u64,
    /// Constant bank 0 (kernel parameters and compiler constants), bytes, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmem0_bytes: Option<u64>,
    pub stack_frame_bytes: u64,
    pub spill_store_bytes: u64,
    pub spill_load_bytes: u64,
    /// Stack of the entry and the device functions it calls, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cumulative_stack_bytes: Option<u64>,
}

impl KernelResources {
    /// Spill stores plus spill loads, bytes.
    pub fn spill_bytes(&self) -> u64 {
        self.spill_store_bytes + self.spill_load_bytes
    }
}

/// One `Compiling entry function` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryReport {
    /// The symbol: an `extern "C"` name as written, a C++ name mangled.
    pub name: String,
    /// The target, e.g. `sm_90a`, when the line names one.
    pub arch: Option<String>,
    pub resources: KernelResources,
    /// Whether a `Used N registers` line was seen for it.
    pub has_usage: bool,
}

/// The stack frame and spills of one function (entry or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameReport {
    pub stack_frame_bytes: u64,
    pub spill_store_bytes: u64,
    pub spill_load_bytes: u64,
}

/// Everything `ptxas -v` said about a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxasReport {
    /// Entry functions in the order ptxas compiled them.
    pub entries: Vec<EntryReport>,
    /// `Function properties` of functions that are not entries (non-inlined device functions).
    pub device_functions: BTreeMap<String, FrameReport>,
    /// Global memory (`__device__` variables), bytes.
    pub gmem_bytes: Option<u64>,
}

impl PtxasReport {
    /// The entry named `name` (its symbol), for `arch` when given and reported.
    pub fn entry(&self, name: &str, arch: Option<&str>) -> Option<&EntryReport> {
        let mut named = self.entries.iter().filter(|e| e.name == name);
        match arch {
            None => named.next(),
            Some(arch) => {
                let all: Vec<&EntryReport> = named.collect();
                all.iter()
                    .find(|e| e.arch.as_deref() == Some(arch))
                    .or_else(|| all.iter().find(|e| e.arch.is_none()))
                    .or(all.first())
                    .copied()
            }
        }
    }

    /// Entry symbols, each once, in compile order.
    pub fn entry_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for e in &self.entries {
            if !names.contains(&e.name) {
                names.push(e.name.clone());
            }
        }
        names
    }
}

/// Parses the output of `ptxas -v` (as printed by nvcc or NVRTC). Lines that are not part of
/// the report (errors, warnings, other tools' output) are skipped.
pub fn parse(text: &str) -> PtxasReport {
    let mut report = PtxasReport::default();
    // Index of the entry being compiled, and whose `Function properties` block is open.
    let mut current: Option<usize> = None;
    let mut properties_of: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = after(line, "Compiling entry function '") {
            let Some((name, tail)) = rest.split_once('\'') else {
                continue;
            };
            let arch = after(tail, "for '")
                .and_then(|a| a.split_once('\''))
                .map(|(a, _)| a);
            report.entries.push(EntryReport {
                name: name.to_string(),
                arch: arch.map(str::to_string),
                resources: KernelResources::default(),
                has_usage: false,
            });
            current = Some(report.entries.len() - 1);
            properties_of = None;
        } else if let Some(rest) = after(line, "Function properties for ") {
            let name = rest.trim().trim_matches('\'').to_string();
            // A device function's block closes the entry before it.
            if current.is_some_and(|i| report.entries[i].name != name) {
                current = None;
            }
            properties_of = Some(name);
        } else if line.contains("bytes stack frame") {
            let frame = FrameReport {
                stack_frame_bytes: number_before(line, "bytes stack frame").unwrap_or(0),
                spill_store_bytes: number_before(line, "bytes spill stores").unwrap_or(0),
                spill_load_bytes: number_before(line, "bytes spill loads").unwrap_or(0),
            };
            let name = properties_of.take();
            match current {
                Some(i) if name.as_deref().is_none_or(|n| n == report.entries[i].name) => {
                    let r = &mut report.entries[i].resources;
                    r.stack_frame_bytes = frame.stack_frame_bytes;
                    r.spill_store_bytes = frame.spill_store_bytes;
                    r.spill_load_bytes = frame.spill_load_bytes;
                }
                _ => {
                    if let Some(name) = name {
                        report.device_functions.insert(name, frame);
                    }
                }
            }
        } else if let Some(rest) = after(line, "Used ") {
            let Some(i) = current else { continue };
            if !rest.contains("registers") {
                continue;
            }
            let e = &mut report.entries[i];
            e.has_usage = true;
            for part in rest.split(',').map(str::trim) {
                let r = &mut e.resources;
                if let Some(n) = leading_number(part, " registers") {
                    r.registers = n as u32;
                } else if let Some(n) = part
                    .strip_prefix("used ")
                    .and_then(|p| leading_number(p, " barriers"))
                {
                    r.barriers = Some(n as u32);
                } else if let Some(n) = leading_number(part, " bytes smem") {
                    r.static_smem_bytes = n;
                } else if let Some(n) = leading_number(part, " bytes cmem[0]") {
                    r.cmem0_bytes = Some(n);
                } else if let Some(n) = leading_number(part, " bytes cumulative stack size") {
                    r.cumulative_stack_bytes = Some(n);
                }
            }
        } else if line.contains("Compile time =") {
            current = None;
            properties_of = None;
        } else if let Some(rest) = after(line, "ptxas info    : ") {
            if let Some(n) = leading_number(rest.trim(), " bytes gmem") {
                report.gmem_bytes = Some(n);
            }
        }
    }
    report
}

/// The text after the first occurrence of `pat`.
fn after<'a>(line: &'a str, pat: &str) -> Option<&'a str> {
    line.find(pat).map(|i| &line[i + pat.len()..])
}

/// `part` is `<number><suffix>` (possibly followed by more text): the number.
fn leading_number(part: &str, suffix: &str) -> Option<u64> {
    let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || !part[digits..].starts_with(suffix) {
        return None;
    }
    part[..digits].parse().ok()
}

/// The number just before ` <label>` somewhere in `line`.
fn number_before(line: &str, label: &str) -> Option<u64> {
    let i = line.find(label)?;
    let head = line[..i].trim_end();
    let start = head
        .rfind(|c: char| !c.is_ascii_digit())
        .map(|j| j + 1)
        .unwrap_or(0);
    head[start..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/ptxas/gate/",
                $name
            ))
        };
    }

    fn res(
        registers: u32,
        barriers: u32,
        smem: u64,
        stack: u64,
        st: u64,
        ld: u64,
    ) -> KernelResources {
        KernelResources {
            registers,
            barriers: Some(barriers),
            static_smem_bytes: smem,
            cmem0_bytes: None,
            stack_frame_bytes: stack,
            spill_store_bytes: st,
            spill_load_bytes: ld,
            cumulative_stack_bytes: None,
        }
    }

    fn check_multi(r: &PtxasReport) {
        assert_eq!(
            r.entry_names(),
            [
                "_ZN2ns5innerEPd",
                "with_dyn_smem",
                "plain",
                "_Z10cpp_kernelPfi",
                "_Z2tkILi256EEvPf",
                "_Z2tkILi128EEvPf"
            ]
        );
        assert!(r
            .entries
            .iter()
            .all(|e| e.arch.as_deref() == Some("sm_90a") && e.has_usage));
        assert_eq!(r.gmem_bytes, Some(0));
        let get = |n: &str| r.entry(n, Some("sm_90a")).unwrap().resources.clone();
        assert_eq!(get("_ZN2ns5innerEPd"), res(8, 0, 0, 0, 0, 0));
        assert_eq!(get("with_dyn_smem"), res(12, 1, 128, 0, 0, 0));
        assert_eq!(get("_Z10cpp_kernelPfi"), res(8, 0, 0, 0, 0, 0));
        assert_eq!(get("_Z2tkILi256EEvPf"), res(10, 1, 1024, 0, 0, 0));
        assert_eq!(get("_Z2tkILi128EEvPf"), res(10, 1, 512, 0, 0, 0));
        let plain = get("plain");
        assert_eq!(plain.registers, 72);
        assert_eq!(plain.stack_frame_bytes, 320);
        assert_eq!(plain.cumulative_stack_bytes, Some(320));
        assert_eq!(plain.spill_bytes(), 0);
        // The non-inlined device function's block is not mistaken for `plain`'s.
        assert_eq!(
            r.device_functions.get("_Z6helperPKfi"),
            Some(&FrameReport::default())
        );
        assert_eq!(r.device_functions.len(), 1);
    }

    #[test]
    fn nvcc_multiple_kernels() {
        check_multi(&parse(fixture!("nvcc_multi_sm90a.txt")));
    }

    #[test]
    fn nvrtc_log_has_the_same_report() {
        let nvrtc = parse(fixture!("nvrtc_multi_sm90a.txt"));
        check_multi(&nvrtc);
        let nvcc = parse(fixture!("nvcc_multi_sm90a.txt"));
        assert_eq!(nvrtc, nvcc);
    }

    #[test]
    fn spills_under_maxrregcount() {
        let r = parse(fixture!("nvcc_multi_maxrreg16_sm90a.txt"));
        let plain = &r.entry("plain", None).unwrap().resources;
        assert_eq!(plain.registers, 24);
        assert_eq!(plain.stack_frame_bytes, 992);
        assert_eq!(plain.spill_store_bytes, 716);
        assert_eq!(plain.spill_load_bytes, 772);
        assert_eq!(plain.spill_bytes(), 1488);
        assert_eq!(plain.cumulative_stack_bytes, Some(992));
        // "Overriding maximum register limit ... for 'plain'" lines are not entries.
        assert_eq!(r.entries.len(), 6);
        assert_eq!(
            r.entry("_Z2tkILi128EEvPf", None)
                .unwrap()
                .resources
                .spill_bytes(),
            0
        );
    }

    #[test]
    fn sm80_adds_cmem() {
        let r = parse(fixture!("nvcc_multi_sm80.txt"));
        let plain = r.entry("plain", Some("sm_80")).unwrap();
        assert_eq!(plain.arch.as_deref(), Some("sm_80"));
        assert_eq!(plain.resources.registers, 80);
        assert_eq!(plain.resources.cmem0_bytes, Some(368));
        assert_eq!(plain.resources.cumulative_stack_bytes, Some(320));
        let tk = &r.entry("_Z2tkILi256EEvPf", None).unwrap().resources;
        assert_eq!(
            (tk.registers, tk.static_smem_bytes, tk.cmem0_bytes),
            (10, 1024, Some(360))
        );
    }

    #[test]
    fn gemm_kernel() {
        let r = parse(fixture!("nvcc_gemm_bf16_sm90a.txt"));
        assert_eq!(r.entry_names(), ["gemm_bf16_kernel"]);
        assert_eq!(
            r.entry("gemm_bf16_kernel", Some("sm_90a"))
                .unwrap()
                .resources,
            res(248, 1, 0, 0, 0, 0)
        );
    }

    #[test]
    fn errors_give_no_entries() {
        for text in [
            fixture!("nvcc_error_sm90a.txt"),
            fixture!("nvrtc_error_sm90a.txt"),
            fixture!("nvcc_ptxas_error_sm90a.txt"),
            fixture!("nvrtc_ptxas_error_sm90a.txt"),
        ] {
            assert!(parse(text).entries.is_empty(), "{text}");
        }
    }

    #[test]
    fn ptxas_smem_error_still_reports_usage() {
        let r = parse(fixture!("nvcc_smem_error_sm90a.txt"));
        let e = r.entry("too_much_static_smem", None).unwrap();
        assert_eq!(e.resources.static_smem_bytes, 240_000);
    }

    /// The fixtures written with the task kernels (`tests/fixtures/ptxas/*.txt`).
    macro_rules! task_fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/ptxas/",
                $name
            ))
        };
    }

    #[test]
    fn task_kernel_fixtures() {
        let gemm = parse(task_fixture!("gemm_default_sm90a.txt"));
        assert_eq!(
            gemm.entry("gemm_bf16_kernel", Some("sm_90a"))
                .unwrap()
                .resources,
            res(250, 1, 0, 0, 0, 0)
        );
        let softmax = parse(task_fixture!("softmax_default_sm90a.txt"));
        assert_eq!(
            softmax
                .entry("softmax_bf16_kernel", Some("sm_90a"))
                .unwrap()
                .resources,
            res(56, 16, 64, 0, 0, 0)
        );
        let cpp = parse(task_fixture!("cpp_mangled_entry_sm90a.txt"));
        assert_eq!(cpp.entry_names(), ["_ZN4demo12scale_kernelILi3EEEvPfPKfi"]);
        assert_eq!(
            super::super::entry::resolve("demo::scale_kernel<3>", &cpp.entry_names()).unwrap(),
            "_ZN4demo12scale_kernelILi3EEEvPfPKfi"
        );
        let multi = parse(task_fixture!("multi_kernel_sm90a.txt"));
        assert_eq!(
            multi.entry_names(),
            ["_Z10cpp_kernelPdi", "with_stack", "block_sum", "add_one"]
        );
        let with_stack = &multi.entry("with_stack", None).unwrap().resources;
        assert_eq!(
            (with_stack.registers, with_stack.stack_frame_bytes),
            (34, 256)
        );
        assert_eq!(
            multi.entry("block_sum", None).unwrap().resources,
            res(12, 1, 1024, 0, 0, 0)
        );
        assert_eq!(
            multi.device_functions.keys().collect::<Vec<_>>(),
            ["_Z4polyfi"]
        );
        let smem = parse(task_fixture!("ptxas_error_too_much_smem_sm90a.txt"));
        assert_eq!(
            smem.entry("too_much_smem", None)
                .unwrap()
                .resources
                .static_smem_bytes,
            262_144
        );
        assert!(parse(task_fixture!("syntax_error_nvcc_sm90a.txt"))
            .entries
            .is_empty());
    }

    #[test]
    fn old_format_without_barriers() {
        let text = "ptxas info    : Compiling entry function 'k' for 'sm_70'\n\
                    ptxas info    : Function properties for k\n    \
                    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
                    ptxas info    : Used 32 registers, 4096 bytes smem, 356 bytes cmem[0]\n";
        let r = parse(text);
        let k = &r.entry("k", Some("sm_70")).unwrap().resources;
        assert_eq!(k.registers, 32);
        assert_eq!(k.barriers, None);
        assert_eq!(k.static_smem_bytes, 4096);
        assert_eq!(k.cmem0_bytes, Some(356));
        assert_eq!(k.spill_bytes(), 8);
        assert_eq!(k.stack_frame_bytes, 8);
    }

    #[test]
    fn two_archs_select_the_asked_one() {
        let text = "ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
                    ptxas info    : Used 40 registers, used 0 barriers\n\
                    ptxas info    : Compile time = 1 ms\n\
                    ptxas info    : Compiling entry function 'k' for 'sm_90a'\n\
                    ptxas info    : Used 48 registers, used 0 barriers\n";
        let r = parse(text);
        assert_eq!(
            r.entry("k", Some("sm_90a")).unwrap().resources.registers,
            48
        );
        assert_eq!(r.entry("k", Some("sm_80")).unwrap().resources.registers, 40);
        assert_eq!(r.entry("k", None).unwrap().resources.registers, 40);
        assert_eq!(r.entry_names(), ["k"]);
    }

    #[test]
    fn empty_and_garbage() {
        assert_eq!(parse(""), PtxasReport::default());
        let r = parse(
            "Used lots of registers\nptxas info : Used 5 registers\nrandom 12 bytes stack frame\n",
        );
        assert!(r.entries.is_empty());
    }
}
