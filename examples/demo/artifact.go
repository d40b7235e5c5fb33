package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/file"
)

// Media types of the demo artifact. They follow the shape of model
// artifacts (one layer per file, titled with its name) without claiming
// to be any real model format.
const (
	artifactType   = "application/vnd.sturdy.demo.model.v1"
	mediaTypeJSON  = "application/vnd.sturdy.demo.file.v1+json"
	mediaTypeShard = "application/vnd.sturdy.demo.weights.v1.safetensors"
	// created is fixed so that the same -size gives the same manifest
	// digest on every run.
	created = "2025-01-01T00:00:00Z"
)

// modelFile is one file of the generated model.
type modelFile struct {
	name      string
	mediaType string
	size      int64
}

// layout decides the files of a model of about total bytes: three small
// JSON files and three safetensors shards sharing the rest, the last one
// smaller, as checkpoints are usually cut.
func layout(total int64) []modelFile {
	tokenizer := min(2<<20, max(total/64, 4<<10))
	small := []modelFile{
		{"config.json", mediaTypeJSON, 0}, // sized by its content
		{"generation_config.json", mediaTypeJSON, 0},
		{"tokenizer.json", mediaTypeJSON, tokenizer},
	}
	rest := max(total-tokenizer-2<<10, 3*minShard)
	unit := rest / 5
	return append(small,
		modelFile{"model-00001-of-00003.safetensors", mediaTypeShard, 2 * unit},
		modelFile{"model-00002-of-00003.safetensors", mediaTypeShard, 2 * unit},
		modelFile{"model-00003-of-00003.safetensors", mediaTypeShard, rest - 4*unit},
	)
}

// minShard leaves room for a safetensors header.
const minShard = 4 << 10

// generate writes the model's files into dir, streaming: no file is ever
// held in memory. The bytes depend only on the file name and size.
func generate(dir string, files []modelFile) error {
	for _, f := range files {
		var err error
		path := filepath.Join(dir, f.name)
		switch {
		case f.name == "config.json":
			err = writeJSON(path, modelConfig)
		case f.name == "generation_config.json":
			err = writeJSON(path, generationConfig)
		case f.mediaType == mediaTypeShard:
			err = writeFile(path, func(w *bufio.Writer) error { return writeShard(w, f) })
		default:
			err = writeFile(path, func(w *bufio.Writer) error { return writeTokenizer(w, f.size) })
		}
		if err != nil {
			return fmt.Errorf("generate %s: %w", f.name, err)
		}
	}
	return nil
}

var modelConfig = map[string]any{
	"architectures":           []string{"DemoForCausalLM"},
	"model_type":              "demo",
	"hidden_size":             4096,
	"intermediate_size":       11008,
	"num_attention_heads":     32,
	"num_hidden_layers":       32,
	"num_key_value_heads":     8,
	"max_position_embeddings": 8192,
	"rms_norm_eps":            1e-5,
	"torch_dtype":             "bfloat16",
	"vocab_size":              32000,
}

var generationConfig = map[string]any{
	"bos_token_id": 1, "eos_token_id": 2, "temperature": 0.6, "top_p": 0.9,
}

func writeJSON(path string, v any) error {
	return writeFile(path, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

func writeFile(path string, fill func(*bufio.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = fill(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeTokenizer writes a JSON vocabulary of exactly size bytes: token
// entries while they fit, then spaces (valid JSON whitespace) before the
// closing braces.
func writeTokenizer(w *bufio.Writer, size int64) error {
	const head, tail = `{"model":{"type":"BPE","vocab":{`, "}}}\n"
	n := int64(len(head))
	w.WriteString(head)
	budget := size - int64(len(tail))
	for i := 0; ; i++ {
		entry := fmt.Sprintf(`"tok%d":%d`, i, i)
		if i > 0 {
			entry = "," + entry
		}
		if n+int64(len(entry)) > budget {
			break
		}
		w.WriteString(entry)
		n += int64(len(entry))
	}
	w.WriteString(strings.Repeat(" ", int(max(budget-n, 0))))
	_, err := w.WriteString(tail)
	return err
}

// writeShard writes a safetensors file of exactly f.size bytes: an 8-byte
// little-endian header length, a JSON header describing one U8 tensor,
// and the tensor's bytes from a ChaCha8 stream seeded by the file name.
func writeShard(w *bufio.Writer, f modelFile) error {
	header := shardHeader(f.size)
	data := f.size - 8 - int64(len(header))
	if err := binary.Write(w, binary.LittleEndian, uint64(len(header))); err != nil {
		return err
	}
	w.WriteString(header)
	rng := rand.NewChaCha8(sha256.Sum256([]byte(f.name)))
	buf := make([]byte, 1<<20)
	for data > 0 {
		chunk := buf[:min(int64(len(buf)), data)]
		_, _ = rng.Read(chunk) // never fails
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		data -= int64(len(chunk))
	}
	return nil
}

// shardHeader returns the JSON header for a shard of size bytes, padded
// with spaces to a multiple of 8 as the format recommends. The tensor
// size depends on the header length and the header on the tensor size, so
// it is rendered twice; the second rendering is never longer.
func shardHeader(size int64) string {
	render := func(n int64) string {
		return fmt.Sprintf(`{"__metadata__":{"format":"pt"},"model.weight":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}`, n, n)
	}
	pad := func(s string, to int) string { return s + strings.Repeat(" ", to-len(s)) }
	first := render(size)
	hlen := (len(first) + 7) / 8 * 8
	return pad(render(size-8-int64(hlen)), hlen)
}

// source is the generated model as an oras target: a file.Store over the
// directory, holding a manifest tagged tag.
type source struct {
	store *file.Store
	root  ocispec.Descriptor
	files []ocispec.Descriptor
}

// openSource adds the files to a file.Store (which hashes each file,
// streaming) and packs them into a tagged manifest.
func openSource(ctx context.Context, dir string, files []modelFile, tag string) (*source, error) {
	store, err := file.New(dir)
	if err != nil {
		return nil, err
	}
	s := &source{store: store}
	for _, f := range files {
		desc, err := store.Add(ctx, f.name, f.mediaType, "")
		if err != nil {
			store.Close()
			return nil, err
		}
		s.files = append(s.files, desc)
	}
	s.root, err = oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, artifactType, oras.PackManifestOptions{
		Layers:              s.files,
		ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: created},
	})
	if err == nil {
		err = store.Tag(ctx, s.root, tag)
	}
	if err != nil {
		store.Close()
		return nil, err
	}
	return s, nil
}
