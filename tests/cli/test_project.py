"""`init`, `labels`, `status` through click, on SQLite and PostgreSQL."""




def test_init_with_labels_from_options_and_a_file_and_settings(run, tiny_model_dir, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("# ImageNet names\ngoldfish, Carassius auratus\n\nelectric ray, crampfish, numbfish, torpedo\n")
    out = run("init", "fish", "--model", str(tiny_model_dir), "--label", "tench, Tinca tinca", "--labels", str(labels),
              "--preset", "cub-paper", "--omega", "0.5")
    assert "project 'fish' created" in out and "labels:   3" in out and "tau0.23" in out and "w0.5" in out
    listing = run("labels", "fish")
    rows = [line.split() for line in listing.splitlines()[1:]]
    # meta tokens by the method §2 rule: tench → sub-word "ch"; "electric ray, …" → "ray"
    assert [r[-4] for r in rows] == ["ch", "goldfish", "ray"]
    assert [r[-3] for r in rows] == ["<tench>", "<goldfish>", "<electric-ray>"]
    assert all(r[-2:] == ["untrained", "0"] for r in rows)
    status = run("status", "fish")
    assert "labels:    3 (0 with a learned concept token)" in status and "images:    0" in status
    assert "'preset': 'cub-paper'" in status and "'omega': 0.5" in status


def test_init_refuses_a_taken_name_and_duplicate_labels(run, tiny_model_dir):
    run("init", "p", "--model", str(tiny_model_dir), "--label", "cat")
    assert "already exists" in run("init", "p", "--model", str(tiny_model_dir), code=1)
    assert "given twice" in run("init", "q", "--model", str(tiny_model_dir), "--label", "a", "--label", "a", code=1)


def test_init_with_a_missing_model_names_it(run, tmp_path):
    out = run("init", "p", "--model", str(tmp_path / "nowhere"), "--label", "cat", code=1)
    assert "nowhere" in out and "Error:" in out


def test_labels_add_and_its_errors(run, tiny_model_dir):
    run("init", "p", "--model", str(tiny_model_dir))
    assert "has no label" in run("labels", "p")
    out = run("labels", "p", "add", "heron", "goldfish, Carassius auratus")
    assert "added 'heron' (meta token 'heron', concept token <heron>)" in out
    assert "already exists" in run("labels", "p", "add", "heron", code=1)
    assert "needs at least one NAME" in run("labels", "p", "add", code=1)


def test_missing_project_is_one_line_naming_init(run):
    out = run("status", "ghost", code=1)
    assert out.startswith("Error: no project named 'ghost'") and "genpromp-annotate init ghost" in out
    assert "Traceback" not in out
    assert "no project named 'ghost'" in run("labels", "ghost", code=1)
