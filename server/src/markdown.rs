//! Model output is untrusted: it is rendered from markdown and then sanitized, so raw HTML,
//! event-handler attributes and `javascript:` URLs never reach the rater's browser.

use pulldown_cmark::{html, Options, Parser};

pub fn render(markdown: &str) -> String {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&unsafe_html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn scripts_handlers_and_javascript_links_are_removed() {
        let html = render(
            "Hi <script>alert(1)</script> <img src=x onerror=\"alert(2)\"> [click](javascript:alert(3)) \
             <a href=\"javascript:alert(4)\">x</a>",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(!html.to_lowercase().contains("javascript:"), "{html}");
    }

    #[test]
    fn code_blocks_survive() {
        let html = render("```rust\nfn main() { println!(\"<b>\"); }\n```");
        assert!(html.contains("<pre><code"), "{html}");
        assert!(html.contains("&lt;b&gt;"), "{html}");
    }
}
