//! Model output is untrusted: it is rendered from markdown and then sanitized, so raw HTML,
//! event-handler attributes and `javascript:` URLs never reach the rater's browser.
//!
//! Nothing in it loads by itself either: an image would be fetched from its host the moment the
//! page shows, telling that host who rates and when (a tracking pixel), so a markdown image becomes
//! its alt text and a plain link to the address, and raw `<img>` tags are removed.

use pulldown_cmark::{html, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

/// The sanitized HTML of `markdown`, from a bounded cache of recent renderings: a rater's page
/// shows the same prompts and responses again and again, and sanitizing (an HTML parse) is most of
/// a page's CPU time. Keyed by the whole text, so a hit is always this text's own rendering.
pub fn render(markdown: &str) -> String {
    if markdown.len() > MAX_CACHED_TEXT {
        return render_uncached(markdown);
    }
    if let Some(html) = CACHE.lock().ok().and_then(|mut cache| cache.get(markdown)) {
        return html.to_string();
    }
    let html = render_uncached(markdown);
    if let Ok(mut cache) = CACHE.lock() {
        let bytes = markdown.len() + html.len();
        cache.insert(markdown.into(), html.as_str().into(), bytes);
    }
    html
}

/// Each of the cache's two generations holds this many bytes of texts and their renderings.
const GENERATION_BYTES: usize = 16 << 20;
/// Longer texts are rendered each time (they would crowd out many short ones).
const MAX_CACHED_TEXT: usize = 64 << 10;

type RenderCache = crate::generations::Generations<Box<str>, std::sync::Arc<str>>;

static CACHE: std::sync::LazyLock<std::sync::Mutex<RenderCache>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(RenderCache::new(GENERATION_BYTES)));

/// Renders `markdown` without the cache (for the callers that keep renderings of their own).
pub fn render_uncached(markdown: &str) -> String {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(
        &mut unsafe_html,
        images_as_links(Parser::new_ext(markdown, options)),
    );
    SANITIZER.clean(&unsafe_html).to_string()
}

/// The sanitizer's rules, built once: building them (sets of tags, attributes and schemes) was a
/// third of a rendering's time.
static SANITIZER: std::sync::LazyLock<ammonia::Builder<'static>> = std::sync::LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .rm_tags(["img"])
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"));
    builder
});

/// Replaces each image by its alt text (the events between its start and end, which the HTML
/// writer would otherwise put in the `alt` attribute) followed by a link to its address, when that
/// address is http(s) and the image is not already inside a link (links do not nest).
fn images_as_links<'a>(events: impl Iterator<Item = Event<'a>>) -> impl Iterator<Item = Event<'a>> {
    let mut images: Vec<CowStr<'a>> = Vec::new();
    let mut link_depth = 0usize;
    events.flat_map(move |event| -> Vec<Event<'a>> {
        match event {
            Event::Start(Tag::Image { dest_url, .. }) => {
                images.push(dest_url);
                Vec::new()
            }
            Event::End(TagEnd::Image) => {
                let url = images.pop().unwrap_or(CowStr::Borrowed(""));
                let remote = url.starts_with("https://") || url.starts_with("http://");
                if !remote || link_depth > 0 || !images.is_empty() {
                    return Vec::new();
                }
                vec![
                    Event::Text(" (image: ".into()),
                    Event::Start(Tag::Link {
                        link_type: LinkType::Inline,
                        dest_url: url.clone(),
                        title: "".into(),
                        id: "".into(),
                    }),
                    Event::Text(url),
                    Event::End(TagEnd::Link),
                    Event::Text(")".into()),
                ]
            }
            Event::Start(tag @ Tag::Link { .. }) => {
                link_depth += 1;
                vec![Event::Start(tag)]
            }
            Event::End(TagEnd::Link) => {
                link_depth = link_depth.saturating_sub(1);
                vec![Event::End(TagEnd::Link)]
            }
            other => vec![other],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{render, render_uncached};

    #[test]
    fn the_cache_gives_each_text_its_own_rendering() {
        // The cached path renders what the uncached one does, on a first call and on a hit.
        for text in [
            "**bold** <script>x</script>",
            "*a*",
            "*a* ",
            "| t |\n|---|\n| 1 |",
        ] {
            assert_eq!(render(text), render_uncached(text));
            assert_eq!(render(text), render_uncached(text), "hit for {text:?}");
        }
    }

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
    fn remote_images_become_their_alt_text_and_a_plain_link() {
        let html = render("See ![a cat](https://tracker.example/pixel.png?rater=1) here.");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("a cat"), "{html}");
        assert!(
            html.contains(
                "<a href=\"https://tracker.example/pixel.png?rater=1\" rel=\"noopener noreferrer nofollow\">https://tracker.example/pixel.png?rater=1</a>"
            ),
            "{html}"
        );
        // Inside a link, the image leaves only its alt text (the link itself stays).
        let html = render("[![badge](https://img.example/b.svg)](https://example.org/)");
        assert!(
            !html.contains("<img") && !html.contains("img.example"),
            "{html}"
        );
        assert!(
            html.contains("badge") && html.contains("https://example.org/"),
            "{html}"
        );
        // A data: or relative image is only its alt text.
        let html = render("![dot](data:image/png;base64,AAAA) ![rel](/x.png)");
        assert!(!html.contains("<img") && !html.contains("data:"), "{html}");
        assert!(html.contains("dot") && html.contains("rel"), "{html}");
    }

    #[test]
    fn raw_img_and_other_remote_resources_are_removed() {
        let html = render(
            "<img src=\"https://tracker.example/p.gif\" alt=\"x\"> <IMG SRC=https://t.example/q> \
             <video src=\"https://t.example/v.mp4\"></video> <audio src=\"https://t.example/a\"></audio> \
             <iframe src=\"https://t.example/\"></iframe> <link rel=stylesheet href=\"https://t.example/s.css\"> \
             <p style=\"background:url(https://t.example/bg)\">text</p>",
        );
        for needle in [
            "<img",
            "<video",
            "<audio",
            "<iframe",
            "<link",
            "style=",
            "t.example",
            "tracker",
        ] {
            assert!(!html.to_lowercase().contains(needle), "{needle} in {html}");
        }
        assert!(html.contains("text"), "{html}");
    }

    #[test]
    fn code_blocks_survive() {
        let html = render("```rust\nfn main() { println!(\"<b>\"); }\n```");
        assert!(html.contains("<pre><code"), "{html}");
        assert!(html.contains("&lt;b&gt;"), "{html}");
    }
}
