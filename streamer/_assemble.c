/* Tick JSON assembly: one bytes object per row from a template and per-field columns.

   stages/json_columns.py prepares every field of a batch as a column at once; what remains per tick is
   stitching ~50 short tokens between the template's literal pieces. In Python that is one `%`
   over a 50-tuple per tick and a bytes object per token, which cost more than decoding, Greeks
   and publishing together; here it is a measuring pass, one allocation and memcpy.

   assemble(pieces, columns, n) -> list[bytes]
     pieces:  tuple of k + 1 bytes, the literal text around the k fields
     columns: list of k columns, each one of
              - a list of n bytes: ready JSON text per row;
              - bytes holding a flat JSON array of n numbers/nulls, as orjson renders a 1-D numpy
                array ("[1.5,null,7]"): its tokens are copied in order, never parsed;
              - a tuple (int64 array of n values, decimals 0 or 2): fixed-point numbers, written
                as Python's repr writes value / 10**decimals ("7", "101.25", "101.2", "101.0");
                INT64_MIN is written as null.
   Row i is pieces[0] + col0[i] + pieces[1] + ... + col(k-1)[i] + pieces[k].
   A column of the wrong length, type or shape raises; nothing is ever read past its end. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NUM_SIZE 32 /* room for "-9223372036854775808" with a point */

typedef enum { TEXT_LIST, ARRAY_TEXT, FIXED } Kind;

typedef struct {
    Kind kind;
    PyObject *list;        /* TEXT_LIST */
    const char *cur, *end; /* ARRAY_TEXT: the next token, and one past the closing ']' */
    Py_buffer view;        /* FIXED: the int64 values */
    int decimals;          /* FIXED */
    char num[NUM_SIZE];    /* FIXED: the current row's value as text, right-aligned */
} Column;

typedef struct {
    const char *text;
    Py_ssize_t len;
} Span;

/* v / 10**decimals the way repr() writes it, right-aligned in num; returns the length. */
static Py_ssize_t format_fixed(int64_t v, int decimals, char *num) {
    char *p = num + NUM_SIZE;
    if (v == INT64_MIN) {
        memcpy(num + NUM_SIZE - 4, "null", 4);
        return 4;
    }
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (decimals == 2) {
        unsigned frac = (unsigned)(u % 100);
        u /= 100;
        if (frac % 10 != 0)
            *--p = (char)('0' + frac % 10);
        *--p = (char)('0' + frac / 10);
        *--p = '.';
    }
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return num + NUM_SIZE - p;
}

/* The next token of column `j` for `row`. */
static int token(Column *c, Py_ssize_t j, Py_ssize_t row, Span *out) {
    if (c->kind == TEXT_LIST) {
        PyObject *item = PyList_GET_ITEM(c->list, row);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "column %zd, row %zd: expected bytes, got %.80s", j, row,
                         Py_TYPE(item)->tp_name);
            return -1;
        }
        *out = (Span){PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item)};
        return 0;
    }
    if (c->kind == FIXED) {
        Py_ssize_t len = format_fixed(((const int64_t *)c->view.buf)[row], c->decimals, c->num);
        *out = (Span){c->num + NUM_SIZE - len, len};
        return 0;
    }
    const char *p = c->cur;
    while (p < c->end && *p != ',' && *p != ']' && *p != '[')
        p++;
    if (p == c->end || p == c->cur || *p == '[') {
        PyErr_Format(PyExc_ValueError, "column %zd: not a flat array of one value per row (row %zd)", j, row);
        return -1;
    }
    *out = (Span){c->cur, p - c->cur};
    c->cur = p + 1;
    return 0;
}

static int open_fixed(PyObject *col, Py_ssize_t j, Py_ssize_t n, Column *c) {
    if (PyTuple_GET_SIZE(col) != 2) {
        PyErr_Format(PyExc_ValueError, "column %zd: a fixed-point column is (values, decimals)", j);
        return -1;
    }
    long decimals = PyLong_AsLong(PyTuple_GET_ITEM(col, 1));
    if (decimals == -1 && PyErr_Occurred())
        return -1;
    if (decimals != 0 && decimals != 2) {
        PyErr_Format(PyExc_ValueError, "column %zd: decimals must be 0 or 2", j);
        return -1;
    }
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(col, 0), &c->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *fmt = c->view.format;
    if (c->view.itemsize != 8 || c->view.ndim != 1 || fmt == NULL || (strcmp(fmt, "l") && strcmp(fmt, "q"))
        || c->view.shape[0] != n) {
        PyBuffer_Release(&c->view);
        PyErr_Format(PyExc_ValueError, "column %zd: values must be a 1-D int64 array of %zd rows", j, n);
        return -1;
    }
    c->kind = FIXED;
    c->decimals = (int)decimals;
    return 0;
}

/* Opens columns [0, k); on failure the ones already open are closed by the caller up to *opened. */
static int open_columns(PyObject *columns, Py_ssize_t n, Column *cols, Py_ssize_t *opened) {
    Py_ssize_t k = PyList_GET_SIZE(columns);
    for (Py_ssize_t j = 0; j < k; j++, *opened = j) {
        PyObject *col = PyList_GET_ITEM(columns, j);
        Column *c = &cols[j];
        if (PyList_Check(col)) {
            if (PyList_GET_SIZE(col) != n) {
                PyErr_Format(PyExc_ValueError, "column %zd has %zd rows, expected %zd", j,
                             PyList_GET_SIZE(col), n);
                return -1;
            }
            c->kind = TEXT_LIST;
            c->list = col;
        } else if (PyBytes_Check(col)) {
            const char *text = PyBytes_AS_STRING(col);
            Py_ssize_t len = PyBytes_GET_SIZE(col);
            if (len < 2 || text[0] != '[' || text[len - 1] != ']') {
                PyErr_Format(PyExc_ValueError, "column %zd: bytes must be a JSON array", j);
                return -1;
            }
            c->kind = ARRAY_TEXT;
            c->cur = text + 1;
            c->end = text + len;
        } else if (PyTuple_Check(col)) {
            if (open_fixed(col, j, n, c) < 0)
                return -1;
        } else {
            PyErr_Format(PyExc_TypeError, "column %zd: expected a list, bytes or (values, decimals), got %.80s",
                         j, Py_TYPE(col)->tp_name);
            return -1;
        }
    }
    return 0;
}

static void close_columns(Column *cols, Py_ssize_t opened) {
    for (Py_ssize_t j = 0; j < opened; j++)
        if (cols[j].kind == FIXED)
            PyBuffer_Release(&cols[j].view);
}

/* After the last row every array-text column must have been read to its closing bracket. */
static int all_consumed(Column *cols, Py_ssize_t k, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < k; j++) {
        Column *c = &cols[j];
        if (c->kind == ARRAY_TEXT && c->cur != c->end && !(n == 0 && c->cur + 1 == c->end)) {
            PyErr_Format(PyExc_ValueError, "column %zd has more values than %zd rows", j, n);
            return -1;
        }
    }
    return 0;
}

/* Each row is measured first (its k tokens located), then written straight into a bytes object
   of exactly its size: no scratch buffer, no second copy. */
static PyObject *rows(PyObject *pieces, Column *cols, Py_ssize_t k, Py_ssize_t n) {
    Span *lit = PyMem_Malloc((k + 1) * sizeof(Span));
    Span *tok = PyMem_Malloc((k + 1) * sizeof(Span));
    PyObject *out = PyList_New(n);
    if (lit == NULL || tok == NULL || out == NULL) {
        PyMem_Free(lit);
        PyMem_Free(tok);
        Py_XDECREF(out);
        return out == NULL ? NULL : PyErr_NoMemory();
    }
    Py_ssize_t fixed = 0;
    for (Py_ssize_t j = 0; j <= k; j++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, j);
        lit[j] = (Span){PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece)};
        fixed += lit[j].len;
    }
    for (Py_ssize_t row = 0; row < n; row++) {
        Py_ssize_t size = fixed;
        for (Py_ssize_t j = 0; j < k; j++) {
            if (token(&cols[j], j, row, &tok[j]) < 0)
                goto fail;
            size += tok[j].len;
        }
        PyObject *item = PyBytes_FromStringAndSize(NULL, size);
        if (item == NULL)
            goto fail;
        char *w = PyBytes_AS_STRING(item);
        for (Py_ssize_t j = 0; j < k; j++) {
            memcpy(w, lit[j].text, lit[j].len);
            w += lit[j].len;
            memcpy(w, tok[j].text, tok[j].len);
            w += tok[j].len;
        }
        memcpy(w, lit[k].text, lit[k].len);
        PyList_SET_ITEM(out, row, item);
    }
    PyMem_Free(lit);
    PyMem_Free(tok);
    return out;
fail:
    PyMem_Free(lit);
    PyMem_Free(tok);
    Py_DECREF(out);
    return NULL;
}

static PyObject *assemble(PyObject *self, PyObject *args) {
    PyObject *pieces, *columns;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!O!n:assemble", &PyTuple_Type, &pieces, &PyList_Type, &columns, &n))
        return NULL;
    Py_ssize_t k = PyList_GET_SIZE(columns);
    if (n < 0 || PyTuple_GET_SIZE(pieces) != k + 1) {
        PyErr_SetString(PyExc_ValueError, "need n >= 0 and exactly one more piece than columns");
        return NULL;
    }
    for (Py_ssize_t j = 0; j <= k; j++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(pieces, j))) {
            PyErr_Format(PyExc_TypeError, "piece %zd: expected bytes", j);
            return NULL;
        }
    }
    Column *cols = PyMem_Malloc((k + 1) * sizeof(Column));
    if (cols == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    Py_ssize_t opened = 0;
    if (open_columns(columns, n, cols, &opened) == 0) {
        opened = k;
        out = rows(pieces, cols, k, n);
        if (out != NULL && all_consumed(cols, k, n) < 0)
            Py_CLEAR(out);
    }
    close_columns(cols, opened);
    PyMem_Free(cols);
    return out;
}

static PyMethodDef methods[] = {
    {"assemble", assemble, METH_VARARGS,
     "assemble(pieces, columns, n) -> list[bytes]: row i is pieces[0] + columns[0][i] + pieces[1] + ... "
     "+ pieces[k]; a column is a list of n bytes, a flat JSON array of n values as bytes, or "
     "(int64 values, decimals) written as fixed-point numbers (INT64_MIN as null)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_assemble", "Tick JSON assembly from columns of rendered text.", -1, methods,
};

PyMODINIT_FUNC PyInit__assemble(void) {
    return PyModule_Create(&module);
}
