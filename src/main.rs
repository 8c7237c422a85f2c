/// Counted, so `mtuvisor_heap_bytes` can tell a leak from the C
/// allocator's fragmentation (src/heap.rs).
#[global_allocator]
static HEAP: mtuvisor::heap::Counting = mtuvisor::heap::Counting;

fn main() {
    std::process::exit(mtuvisor::cli::main());
}
