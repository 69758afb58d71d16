"""The native ``{% cache TTL, PART, ... [, tags=(...)] %}`` Jinja tag FennecCache registers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import jinja2
import pytest
from _servers import RedisServer, RedisServerFactory
from _support import HANG, AppFactory, Counter, backend_of, new_app, run_threads
from flask import Flask, render_template_string
from markupsafe import Markup

from flask_fennec_cache import ConfigurationError, FennecCache
from flask_fennec_cache.fragments import fragment_key, invalidate_fragment


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


def render(app: Flask, source: str, **context: object) -> str:
    with app.test_request_context():
        return render_template_string(source, **context)


def counting(counter: Counter) -> Callable[[], int]:
    """A template global that counts how often the fragment's body ran."""
    return counter.bump


def test_a_fragment_is_rendered_once_then_served_from_the_cache(app: Flask) -> None:
    renders = Counter()
    source = '{% cache 60, "sidebar" %}rendered {{ count() }}{% endcache %}'
    assert render(app, source, count=counting(renders)) == "rendered 1"
    assert render(app, source, count=counting(renders)) == "rendered 1"
    assert renders.calls == 1


def test_the_fragment_is_stored_as_safe_markup_and_never_escaped_twice(app: Flask) -> None:
    source = '<p>{% cache 60, "card" %}<b>{{ name }}</b>{% endcache %}</p>'
    first = render(app, source, name="<Ann & Bob>")
    assert first == "<p><b>&lt;Ann &amp; Bob&gt;</b></p>"
    assert render(app, source, name="ignored") == first
    stored = backend_of(app).get(fragment_key("card"))
    assert isinstance(stored, Markup)
    assert stored == "<b>&lt;Ann &amp; Bob&gt;</b>"


def test_parts_name_the_fragment_and_invalidate_fragment_drops_one(app: Flask) -> None:
    source = '{% cache 60, "profile", user_id, lang %}{{ user_id }}-{{ n }}{% endcache %}'
    assert render(app, source, user_id=1, lang="en", n="a") == "1-a"
    assert render(app, source, user_id=2, lang="en", n="b") == "2-b"
    assert render(app, source, user_id=1, lang="en", n="c") == "1-a"
    with app.app_context():
        assert invalidate_fragment("profile", 1, "en") is True
        assert invalidate_fragment("profile", 1, "en") is False
    assert render(app, source, user_id=1, lang="en", n="d") == "1-d"
    assert render(app, source, user_id=2, lang="en", n="e") == "2-b"


def test_invalidate_fragment_takes_a_backend_outside_an_app(app: Flask) -> None:
    render(app, '{% cache 60, "footer" %}x{% endcache %}')
    assert invalidate_fragment("footer", backend=backend_of(app)) is True


def test_a_tag_invalidation_drops_every_fragment_carrying_it(app: Flask) -> None:
    source = (
        '{% cache 300, "post", post_id, view, tags=("post:%d" % post_id,) %}'
        "{{ view }} of {{ title }}{% endcache %}"
    )
    assert render(app, source, post_id=1, view="teaser", title="Old") == "teaser of Old"
    assert render(app, source, post_id=1, view="full", title="Old") == "full of Old"
    assert render(app, source, post_id=2, view="teaser", title="Other") == "teaser of Other"
    assert backend_of(app).invalidate_tags("post:1")  # the post was saved
    assert render(app, source, post_id=1, view="teaser", title="New") == "teaser of New"
    assert render(app, source, post_id=1, view="full", title="New") == "full of New"
    assert render(app, source, post_id=2, view="teaser", title="x") == "teaser of Other"


def test_stale_ttl_keeps_the_fragment_past_its_ttl_for_stale_serving(app: Flask) -> None:
    render(app, '{% cache 30, "slow", stale_ttl=600 %}x{% endcache %}')
    assert (backend_of(app).ttl(fragment_key("slow")) or 0) > 30


def test_without_parts_the_template_and_line_name_the_fragment(app: Flask) -> None:
    source = "{% cache 60 %}a{{ n }}{% endcache %}\n{% cache 60 %}b{{ n }}{% endcache %}"
    assert render(app, source, n=1) == "a1\nb1"
    assert render(app, source, n=2) == "a1\nb1"


def test_concurrent_misses_render_the_fragment_once(app: Flask) -> None:
    renders = Counter()
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        renders.bump()
        started.set()
        release.wait(HANG)
        return "slow"

    source = '{% cache 60, "report" %}{{ slow() }}{% endcache %}'

    def call(index: int) -> str:
        if index:
            started.wait(HANG)
            if index == 1:
                threading.Timer(0.2, release.set).start()
        return render(app, source, slow=slow)

    assert run_threads(5, call) == ["slow"] * 5
    assert renders.calls == 1


@pytest.fixture
def real_app(redis_server_factory: RedisServerFactory) -> Iterator[tuple[Flask, RedisServer]]:
    server = redis_server_factory()
    app = new_app("memory://unused", FENNEC_CACHE_URL=server.url)
    FennecCache(app)
    yield app, server
    backend_of(app).close()


def test_a_dead_redis_renders_the_fragment_instead(
    real_app: tuple[Flask, RedisServer],
) -> None:
    app, server = real_app
    source = '{% cache 60, "menu" %}menu {{ n }}{% endcache %}'
    assert render(app, source, n=1) == "menu 1"
    server.kill()
    assert render(app, source, n=2) == "menu 2"
    assert render(app, source, n=3) == "menu 3"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('{% cache 60, "a", ttl=5 %}x{% endcache %}', "no option 'ttl'"),
        ('{% cache 60, tags=("t",), "a" %}x{% endcache %}', "parts come before"),
    ],
)
def test_a_malformed_tag_is_a_template_syntax_error(app: Flask, source: str, problem: str) -> None:
    with pytest.raises(jinja2.TemplateSyntaxError, match=problem):
        render(app, source)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('{% cache 60, "a", tags="post:1" %}x{% endcache %}', "tags must be a sequence"),
        ('{% cache "soon", "a" %}x{% endcache %}', "ttl must be a finite number"),
        ('{% cache -1, "a" %}x{% endcache %}', "ttl must be a finite number"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(app: Flask, source: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        render(app, source)


def test_a_template_environment_without_a_cache_says_what_to_do() -> None:
    from flask_fennec_cache.fragments import FragmentCacheExtension

    env = jinja2.Environment(extensions=[FragmentCacheExtension])
    with pytest.raises(ConfigurationError, match="FennecCache"):
        env.from_string('{% cache 60, "a" %}x{% endcache %}').render()


def test_each_app_caches_its_fragments_in_its_own_backend(make_app: AppFactory) -> None:
    one, two = make_app(), make_app()
    source = '{% cache 60, "shared-name" %}{{ who }}{% endcache %}'
    assert render(one, source, who="one") == "one"
    assert render(two, source, who="two") == "two"
    assert render(one, source, who="x") == "one"
