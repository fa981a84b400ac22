//! The repository README's embedding example is `examples/embedding.rs`, which the crate's
//! doctest compiles: this test fails when the README's copy drifts from it. Outside the
//! repository (a packaged crate has no workspace README) it prints `skipped:` and returns.

use std::io::Write as _;

const EXAMPLE: &str = include_str!("../examples/embedding.rs");
const FENCE: &str = "## Embedding\n\n```rust,no_run\n";

#[test]
fn readme_embedding_snippet_is_the_compiled_example() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let Ok(readme) = std::fs::read_to_string(&path) else {
        let _ = writeln!(
            std::io::stderr().lock(),
            "skipped: readme_embedding_snippet_is_the_compiled_example: no {}",
            path.display()
        );
        return;
    };
    let start = readme
        .find(FENCE)
        .expect("the README has an `## Embedding` section opening with a ```rust,no_run block")
        + FENCE.len();
    let len = readme[start..]
        .find("```\n")
        .expect("the README's embedding block is closed");
    let snippet = &readme[start..start + len];
    assert_eq!(
        snippet, EXAMPLE,
        "README.md's embedding example differs from crates/bayeux-transport/examples/embedding.rs: \
         copy the example (which the doctest compiles) into the README"
    );
}
